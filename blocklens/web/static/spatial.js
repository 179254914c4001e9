// Spatial attribution: hover a position in one layer to see which positions of the earlier layer influence
// it and which positions of the later layer it influences, with its attribution to each top class.
import { el, fmt, bar, mapExtent, methodLine } from "./util.js";
import { Overlay } from "./overlay.js";
import { iconImg } from "./icons.js";

export function spatialView(ctx) {
  const { data } = ctx;
  const top = data.classes[0];
  const overlays = data.layers.map((L) => new Overlay(data.image, L.shape.slice(1), 260, L.layer));
  const captions = data.layers.map(() => el("div", { class: "caption" }));
  const panel = el("div", { class: "spatial-panel" });
  const root = el("section", { id: "spatial", class: "view" },
    el("h2", { text: "Spatial attribution" }),
    el("p", { class: "lede", text: "Hover a position in any layer: the earlier layer shows what influences it, the later layer what it influences, and the panel its attribution to each top class." }),
    el("div", { class: "row" }, ...overlays.map((o, i) => el("div", { class: "stack" }, o.root, captions[i])), panel),
    ...data.layers.map((L) => methodLine(L, "spatial")));

  function rest() {
    overlays.forEach((o, i) => {
      const L = data.layers[i];
      o.mark(null).heat(L.spatial[top]);
      captions[i].textContent = `${L.layer}: attribution to “${data.labels[top]}” (orange: for, blue: against)`;
    });
  }

  function influence(i, x, y) {
    // what influences layer i at (x, y): earlier layer map; what it influences: later layer map
    if (i > 0) {
      const f = data.flows[i - 1];
      overlays[i - 1].mark(null).heat(f.spatial[y][x], { color: [120, 200, 60], gamma: 0.5 });
      captions[i - 1].textContent = `${f.from}: influences ${f.to} at (${x}, ${y})`;
    }
    if (i < data.layers.length - 1) {
      const f = data.flows[i];
      const m = f.spatial.map((row) => row.map((cell) => cell[y][x]));
      overlays[i + 1].mark(null).heat(m, { color: [160, 90, 220], gamma: 0.5 });
      captions[i + 1].textContent = `${f.to}: influenced by ${f.from} at (${x}, ${y})`;
    }
    for (let j = 0; j < data.layers.length; j++) if (Math.abs(j - i) > 1) {
      overlays[j].mark(null).heat(null);
      captions[j].textContent = `${data.layers[j].layer}`;
    }
  }

  function showPanel(i, x, y) {
    const L = data.layers[i];
    const vals = data.classes.map((c) => L.spatial[c][y][x]);
    const max = Math.max(...data.classes.map((c) => mapExtent(L.spatial[c]))) || 1;
    const ch = L.dictionary.channels[y][x].slice(0, 4);
    panel.replaceChildren(
      el("div", { class: "dict-head", text: `${L.layer} at (${x}, ${y})` }),
      el("div", { class: "spatial-classes" }, ...data.classes.map((c, k) => el("div", { class: "cls-row", "data-class": c },
        el("span", { class: "cls-name", text: data.labels[c] }), bar(vals[k], max), el("span", { class: "chan-val", text: fmt(vals[k], 3) })))),
      el("div", { class: "dict-head small", text: "what fired there" }),
      el("div", { class: "icon-row" }, ...ch.map((c) => iconImg(ctx.icons, L.channel_icons[c], `${L.layer}:${c}`, 44))));
    panel.dataset.cell = `${i}:${x},${y}`;
  }

  overlays.forEach((o, i) => o.onHover((x, y) => {
    if (x === null) { rest(); return; }
    influence(i, x, y);
    const L = data.layers[i];
    o.mark(x, y).heat(L.spatial[top]);
    captions[i].textContent = `${L.layer} at (${x}, ${y})`;
    showPanel(i, x, y);
  }));
  rest();
  const last = data.layers.length - 1, Ll = data.layers[last];
  showPanel(last, Math.floor(Ll.shape[2] / 2), Math.floor(Ll.shape[1] / 2));
  return root;
}
