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

// `examples`: icon key -> examples (the report's page document); `fetcher` (the app): an object with
// has(key) and get(key) -> Promise of examples, asked when the map lacks a key. Safe to call again on the same
// root (a new explanation): the listeners are installed once and read the latest map.
export function attachExamples(root, examples, fetcher = null) {
  const st = root.__examples || (root.__examples = { pinned: null, hovered: null, tip: null });
  st.examples = { ...(examples || {}) };
  st.fetcher = fetcher;
  const known = (key) => !!key && (key in st.examples || (st.fetcher && st.fetcher.has(key)));
  for (const img of root.querySelectorAll("img.icon")) img.classList.toggle("has-examples", known(img.dataset.icon));
  if (st.tip) return st.tip;
  const tip = st.tip = el("div", { class: "ex-tip", hidden: true, "data-testid": "examples-tip" });
  document.body.append(tip);
  const place = (img, ex) => {
    tip.replaceChildren(examplesPanel(ex));
    tip.dataset.unit = `${ex.layer}:${ex.unit}`;
    const r = img.getBoundingClientRect();
    tip.style.left = `${Math.round(window.scrollX + r.right + 8)}px`;
    tip.style.top = `${Math.round(window.scrollY + r.top)}px`;
    tip.hidden = false;
  };
  const show = (img) => {
    const key = img.dataset.icon;
    if (st.examples[key]) { place(img, st.examples[key]); return; }
    if (!st.fetcher || !st.fetcher.has(key)) return;
    st.fetcher.get(key).then((ex) => {
      if (!ex) return;
      st.examples[key] = ex;
      if (st.hovered === img || st.pinned === img) place(img, ex);
    }).catch(() => {});
  };
  const iconOf = (ev) => (ev.target.closest ? ev.target.closest("img.icon") : null);
  root.addEventListener("mouseover", (ev) => {
    const img = iconOf(ev);
    if (!img) return;
    st.hovered = img;
    if (!st.pinned) show(img);
  });
  root.addEventListener("mouseout", (ev) => {
    const img = iconOf(ev);
    if (!img) return;
    st.hovered = null;
    if (!st.pinned) tip.hidden = true;
  });
  root.addEventListener("click", (ev) => {
    const img = iconOf(ev);
    if (!img || !known(img.dataset.icon)) return;
    st.pinned = st.pinned === img ? null : img;
    if (st.pinned) show(img); else tip.hidden = true;
  });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { st.pinned = null; tip.hidden = true; } });
  return tip;
}
