// Semantic dictionary: hover a cell of a layer's grid over the image; the channels that fired most there
// follow the pointer, as icons with value bars ("floppy ear fired", not "neuron 426 fired").
import { el, fmt, bar } from "./util.js";
import { Overlay } from "./overlay.js";
import { iconImg } from "./icons.js";
import { layerTabs } from "./classes.js";

export function dictionaryView(ctx) {
  const { data } = ctx;
  const state = { layer: 0, cell: null };
  const tabs = layerTabs(data, (i) => { state.layer = i; build(); });
  const holder = el("div", { class: "stack" });
  const side = el("div", { class: "dict-side" });
  const float = el("div", { class: "dict-float", hidden: true });
  const root = el("section", { id: "dictionary", class: "view" },
    el("h2", { text: "Semantic dictionary" }),
    el("p", { class: "lede", text: "Each cell of the layer's grid is a position the network sees. Hover one: the detectors that fired most there follow the pointer." }),
    el("div", { class: "row controls" }, tabs.root),
    el("div", { class: "row" }, holder, side), float);
  let overlay = null;

  let max = 1;  // the layer's strongest value anywhere: every bar of the layer is drawn to one scale

  function entries(L, x, y) {
    const ch = L.dictionary.channels[y][x], vals = L.dictionary.values[y][x];
    return ch.map((c, i) => el("div", { class: "dict-entry", "data-channel": c },
      iconImg(ctx.icons, L.channel_icons[c], `${L.layer}:${c}`, 48),
      el("div", { class: "chan-text" }, el("div", { class: "chan-name", text: `${L.layer}:${c}` }),
        bar(vals[i], max, "#555"), el("div", { class: "chan-val", text: fmt(vals[i]) }))));
  }

  function show(x, y, e) {
    const L = data.layers[state.layer];
    if (x === null) {
      float.hidden = true;
      overlay.mark(null);
      return;
    }
    overlay.mark(x, y);
    const head = el("div", { class: "dict-head", text: `${L.layer} at (${x}, ${y}) · magnitude ${fmt(L.dictionary.magnitude[y][x], 1)}` });
    side.replaceChildren(head, ...entries(L, x, y));
    side.dataset.cell = `${x},${y}`;
    float.replaceChildren(el("div", { class: "dict-head", text: `(${x}, ${y})` }), ...entries(L, x, y));
    float.hidden = false;
    if (e) {
      const r = root.getBoundingClientRect();
      float.style.left = `${e.clientX - r.left + 18}px`;
      float.style.top = `${e.clientY - r.top + 18}px`;
    }
  }

  function build() {
    const L = data.layers[state.layer];
    max = Math.max(...L.dictionary.values.flat().map((v) => v[0])) || 1;
    overlay = new Overlay(data.image, L.shape.slice(1), 320, L.layer).showGrid(true);
    overlay.onHover((x, y, e) => show(x, y, e));
    holder.replaceChildren(overlay.root);
    tabs.select(state.layer);
    // start on the strongest position so the panel is never empty
    let best = [0, 0], m = -1;
    L.dictionary.magnitude.forEach((row, y) => row.forEach((v, x) => { if (v > m) { m = v; best = [x, y]; } }));
    show(best[0], best[1], null);
    float.hidden = true;
  }
  build();
  return root;
}
