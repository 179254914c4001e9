// The activation atlas (Carter et al. 2019): a grid of direction icons over the UMAP layout of a layer's sampled
// activations. Wheel or the buttons zoom; hovering a cell shows its class evidence and dataset examples.
import { el } from "./util.js";
import { examplesPanel } from "./examples.js";

export function atlasView(atlas) {
  const cellPx = 48;
  let zoom = 1;
  const board = el("div", { class: "atlas-board", style: `width:${atlas.grid * cellPx}px;height:${atlas.grid * cellPx}px` });
  const info = el("div", { class: "atlas-info", "data-testid": "atlas-info" },
    el("p", { class: "lede", text: "Hover a cell: its top classes (mean linear attribution of its samples) and the patches its samples came from." }));
  for (const c of atlas.cells) {
    const cell = el("div", { class: "atlas-cell", "data-row": c.row, "data-col": c.col, "data-count": c.count,
      style: `left:${c.col * cellPx}px;top:${c.row * cellPx}px;width:${cellPx}px;height:${cellPx}px` },
      c.icon ? el("img", { src: c.icon, alt: `cell ${c.row},${c.col}`, width: cellPx, height: cellPx }) : el("span", { class: "atlas-dot" }));
    cell.addEventListener("mouseenter", () => {
      for (const o of board.querySelectorAll(".atlas-cell.on")) o.classList.remove("on");
      cell.classList.add("on");
      const top = c.classes.length ? Math.max(...c.classes.map((k) => Math.abs(k.evidence))) || 1 : 1;
      info.replaceChildren(
        el("div", { class: "ex-title", text: `cell (${c.row}, ${c.col}) · ${c.count} sample${c.count === 1 ? "" : "s"}` }),
        el("div", { class: "atlas-classes" }, ...c.classes.map((k) => el("div", { class: "atlas-class", "data-class": k.index },
          el("span", { class: "pred-label", text: k.label }),
          el("span", { class: "bar" }, el("span", { class: "bar-fill", style: `width:${Math.max(1, 100 * Math.abs(k.evidence) / top)}%;background:${k.evidence >= 0 ? "#2b7bba" : "#d0543c"}` })),
          el("span", { class: "chan-val", text: k.evidence.toFixed(3) })))),
        c.examples ? examplesPanel({ top: c.examples }, "where its samples came from") : null);
    });
    board.append(cell);
  }
  const holder = el("div", { class: "atlas-holder" }, board);
  const setZoom = (z) => {
    zoom = Math.min(8, Math.max(0.25, z));
    board.style.transform = `scale(${zoom})`;
    board.dataset.zoom = zoom.toFixed(2);
    holder.style.height = `${atlas.grid * cellPx * zoom + 4}px`;
  };
  holder.addEventListener("wheel", (ev) => { ev.preventDefault(); setZoom(zoom * (ev.deltaY < 0 ? 1.15 : 1 / 1.15)); }, { passive: false });
  const bar = el("div", { class: "atlas-bar" },
    el("button", { type: "button", text: "−", title: "zoom out", onclick: () => setZoom(zoom / 1.25) }),
    el("button", { type: "button", text: "+", title: "zoom in", onclick: () => setZoom(zoom * 1.25) }),
    el("button", { type: "button", text: "1:1", title: "reset zoom", onclick: () => setZoom(1) }),
    el("span", { class: "lede", text: `${atlas.model} · ${atlas.layer} · ${atlas.cells.length} cells of ${atlas.grid}×${atlas.grid} · ${atlas.points} samples (index ${atlas.index})` }));
  setZoom(1);
  return el("section", { id: "atlas", class: "view atlas" }, el("h2", { text: `Activation atlas · ${atlas.layer}` }), bar,
    el("div", { class: "atlas-main" }, holder, info));
}

export function mountAtlas(root, atlas) {
  root.replaceChildren(atlasView(atlas));
  root.dataset.ready = "1";
}
