// Dataset examples beside an icon: the patches of a folder that excite the icon's unit most (and least, for a
// signed layer), from an activation index (blocklens index). Hovering any icon whose key the page document's
// `examples` names shows them in a floating panel; a click pins the panel (a second click, or Escape, unpins).
import { el } from "./util.js";

export function examplesPanel(ex, title) {
  const row = (items, label) => el("div", { class: "ex-row" },
    el("span", { class: "ex-label", text: label }),
    ...items.map((e) => el("figure", { class: "ex" },
      el("img", { src: e.src, width: 56, height: 56, alt: e.path,
        title: e.value === undefined ? e.path : `${e.path} @ (${e.x},${e.y}): ${e.value.toFixed(2)}` }),
      el("figcaption", { text: e.value === undefined ? "" : e.value.toFixed(1) }))));
  return el("div", { class: "ex-panel" },
    el("div", { class: "ex-title", text: title || `${ex.layer}:${ex.unit} · dataset examples` }),
    row(ex.top || [], "top"),
    (ex.bottom && ex.bottom.length) ? row(ex.bottom, "bottom") : null);
}

export function attachExamples(root, examples) {
  const tip = el("div", { class: "ex-tip", hidden: true, "data-testid": "examples-tip" });
  document.body.append(tip);
  let pinned = null;
  const show = (img) => {
    const ex = examples[img.dataset.icon];
    if (!ex) return;
    tip.replaceChildren(examplesPanel(ex));
    tip.dataset.unit = `${ex.layer}:${ex.unit}`;
    const r = img.getBoundingClientRect();
    tip.style.left = `${Math.round(window.scrollX + r.right + 8)}px`;
    tip.style.top = `${Math.round(window.scrollY + r.top)}px`;
    tip.hidden = false;
  };
  root.addEventListener("mouseover", (ev) => {
    const img = ev.target.closest ? ev.target.closest("img.icon") : null;
    if (img && !pinned) show(img);
  });
  root.addEventListener("mouseout", (ev) => {
    const img = ev.target.closest ? ev.target.closest("img.icon") : null;
    if (img && !pinned) tip.hidden = true;
  });
  root.addEventListener("click", (ev) => {
    const img = ev.target.closest ? ev.target.closest("img.icon") : null;
    if (!img || !examples[img.dataset.icon]) return;
    pinned = pinned === img ? null : img;
    if (pinned) show(img); else tip.hidden = true;
  });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { pinned = null; tip.hidden = true; } });
  for (const img of root.querySelectorAll("img.icon")) if (examples[img.dataset.icon]) img.classList.add("has-examples");
  return tip;
}
