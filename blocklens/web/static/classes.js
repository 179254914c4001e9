// Classes: two class pickers; the channels of one layer that support each class over the other, with their
// icons and net evidence (linear attribution, so any pair is a difference of two per-class rows); hovering a
// channel shows where it fires on the image.
import { el, fmt, bar, diffRows, topIndices, mapDiff, channelMap, rgb, methodLine, POS, NEG } from "./util.js";
import { Overlay } from "./overlay.js";
import { iconImg } from "./icons.js";

const SHOW = 8;

export function classesView(ctx) {
  const { data } = ctx;
  const state = { a: data.pair[0], b: data.pair[1], layer: 0 };
  const pickA = classPicker(data, state.a, (v) => { state.a = v; update(); });
  const pickB = classPicker(data, state.b, (v) => { state.b = v; update(); });
  const tabs = layerTabs(data, (i) => { state.layer = i; update(); });
  const overlay = new Overlay(data.image, data.layers[0].shape.slice(1), 240);
  const caption = el("div", { class: "caption" });
  const colA = el("div", { class: "chan-col" });
  const colB = el("div", { class: "chan-col" });
  const total = el("div", { class: "net" });
  const how = el("div", { class: "method-box" });
  const root = el("section", { id: "classes", class: "view" },
    el("h2", { text: "Which detectors decided" }),
    el("p", { class: "lede", text: "Pick two classes. The channels below add the most evidence for one over the other (activation × gradient of the logit difference, which equals the difference of log-probabilities). Hover a channel to see where it fires." }),
    el("div", { class: "row controls" }, pickA, el("span", { class: "vs", text: "vs" }), pickB, tabs.root),
    el("div", { class: "row" }, el("div", { class: "stack" }, overlay.root, caption), colA, colB),
    total, how);

  function update() {
    const L = data.layers[state.layer];
    const act = ctx.acts[state.layer];
    const diff = diffRows(L.attribution[state.a], L.attribution[state.b]);
    const max = Math.max(...diff.map(Math.abs)) || 1;
    const la = data.labels[state.a], lb = data.labels[state.b];
    const base = mapDiff(L.spatial[state.a], L.spatial[state.b]);
    const showBase = () => {
      overlay.heat(base);
      caption.textContent = `${L.layer}: where the evidence for “${la}” (orange) over “${lb}” (blue) is`;
    };
    const card = (c) => {
      const key = L.channel_icons[c];
      const v = diff[c];
      const node = el("div", { class: "chan", "data-channel": c, tabindex: 0 },
        iconImg(ctx.icons, key, `${L.layer}:${c}`),
        el("div", { class: "chan-text" }, el("div", { class: "chan-name", text: `${L.layer}:${c}` }),
          bar(v, max), el("div", { class: "chan-val", text: `${v >= 0 ? "+" : ""}${fmt(v)}` })));
      const show = () => {
        overlay.heat(channelMap(act, c), { color: v >= 0 ? POS : NEG });
        caption.textContent = `${L.layer}:${c} fires here (activation)`;
        node.classList.add("active");
      };
      const hide = () => { node.classList.remove("active"); showBase(); };
      node.addEventListener("mouseenter", show);
      node.addEventListener("focus", show);
      node.addEventListener("mouseleave", hide);
      node.addEventListener("blur", hide);
      return node;
    };
    const pos = topIndices(diff, SHOW, 1), neg = topIndices(diff, SHOW, -1);
    colA.replaceChildren(el("h3", { style: `color:${rgb(POS)}`, text: `for ${la}` }), ...pos.map(card));
    colB.replaceChildren(el("h3", { style: `color:${rgb(NEG)}`, text: `for ${lb}` }), ...neg.map(card));
    const sum = diff.reduce((s, v) => s + v, 0);
    total.textContent = `Net evidence at ${L.layer} for “${la}” over “${lb}”: ${sum >= 0 ? "+" : ""}${fmt(sum)} (all ${diff.length} channels; the ${pos.length} + ${neg.length} shown carry ${fmt(pos.concat(neg).reduce((s, c) => s + diff[c], 0))}).`;
    if (state.a === state.b) total.textContent = "Pick two different classes.";
    how.replaceChildren(methodLine(L, "channels"));
    tabs.select(state.layer);
    showBase();
  }
  update();
  return root;
}

function classPicker(data, value, onChange) {
  const sel = el("select", { class: "class-pick", onchange: (e) => onChange(Number(e.target.value)) },
    ...data.classes.map((c, i) => el("option", { value: c, selected: c === value },
      `${data.labels[c]} (${(100 * data.predictions[i].prob).toFixed(1)}%)`)));
  return sel;
}

export function layerTabs(data, onSelect) {
  const buttons = data.layers.map((L, i) => el("button", { class: "tab", "data-layer": L.layer, onclick: () => onSelect(i) }, L.layer));
  return {
    root: el("div", { class: "tabs" }, ...buttons),
    select(i) { buttons.forEach((b, j) => b.classList.toggle("on", i === j)); },
  };
}
