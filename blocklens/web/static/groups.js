// Neuron groups: the layer's activations factorized into k groups (a slider picks k); hover a group to see
// it alone; a flow diagram carries attribution from an earlier layer's groups to a later layer's groups to
// the top classes.
import { el, svgEl, fmt, rgb, methodLine, NEG } from "./util.js";
import { Overlay } from "./overlay.js";
import { iconImg } from "./icons.js";

export function groupsView(ctx) {
  const { data } = ctx;
  const counts = data.layers[0].groups.counts;
  const state = { k: data.layers[0].groups.default, hover: null };
  const slider = el("input", { type: "range", class: "groups-k", min: 0, max: counts.length - 1, step: 1,
    value: Math.max(0, counts.indexOf(state.k)), "aria-label": "number of groups" });
  const kLabel = el("span", { class: "groups-k-label" });
  const body = el("div", { class: "row groups-body" });
  const sankeyBox = el("div", { class: "sankey" });
  const how = el("div", { class: "method-box" });
  const root = el("section", { id: "groups", class: "view" },
    el("h2", { text: "Neuron groups" }),
    el("p", { class: "lede", text: "Non-negative matrix factorization splits each layer into a few groups of neurons that fire together. Hover a group to isolate it." }),
    el("div", { class: "row controls" }, el("label", {}, "groups ", slider), kLabel), body, sankeyBox, how);

  let overlays = [], cards = [];

  function isolate(li, g) {
    state.hover = g === null ? null : [li, g];
    data.layers.forEach((L, i) => {
      const opt = L.groups.options[state.k];
      if (!opt) return;
      if (state.hover && state.hover[0] === i) overlays[i].cells(null).heat(opt.spatial[g], { color: opt.colors[g] });
      else overlays[i].heat(null).cells(opt.cell_colors, 0.7);
    });
    cards.forEach(({ li: i, g: j, node }) => node.classList.toggle("dim", !!state.hover && !(state.hover[0] === i && state.hover[1] === j)));
    for (const p of sankeyBox.querySelectorAll("[data-src]")) {
      const on = !state.hover || p.dataset.src === `${li}:${g}` || p.dataset.dst === `${li}:${g}`;
      p.classList.toggle("dim", !on);
    }
    root.dataset.isolated = state.hover ? `${li}:${g}` : "";
  }

  function build() {
    kLabel.textContent = `k = ${state.k}`;
    root.dataset.k = state.k;
    overlays = []; cards = [];
    body.replaceChildren(...data.layers.map((L, li) => {
      const opt = L.groups.options[state.k];
      if (!opt) return el("div", { class: "stack", text: `${L.layer}: no ${state.k} groups` });
      const o = new Overlay(data.image, L.shape.slice(1), 220, L.layer);
      overlays[li] = o;
      o.cells(opt.cell_colors, 0.7);
      const list = el("div", { class: "group-cards" }, ...opt.colors.map((c, g) => {
        const share = opt.attribution[g][0];
        const what = opt.method === "ablation" ? "drop of" : "attribution to";
        const unit = opt.score === "logprob" ? "log-probability" : "logit";
        const node = el("div", { class: "group-card", "data-group": g, style: `border-color:${rgb(c)}`, tabindex: 0 },
          iconImg(ctx.icons, opt.icons[g], `${L.layer} group ${g + 1}`, 56),
          el("div", { class: "group-label", style: `color:${rgb(c)}`, text: `group ${g + 1}` }),
          el("div", { class: "chan-val", title: `${what} ${data.labels[data.classes[0]]}'s ${unit}${opt.method === "ablation" ? " when this group is removed" : ""}`, text: `${share >= 0 ? "+" : ""}${fmt(share)}` }));
        node.addEventListener("mouseenter", () => isolate(li, g));
        node.addEventListener("focus", () => isolate(li, g));
        node.addEventListener("mouseleave", () => isolate(li, null));
        node.addEventListener("blur", () => isolate(li, null));
        cards.push({ li, g, node });
        return node;
      }));
      return el("div", { class: "stack group-layer", "data-layer": L.layer }, o.root, list);
    }));
    const sk = sankey(ctx, state.k, isolate);
    sankeyBox.replaceChildren(sk.svg, sk.note);
    how.replaceChildren(...data.layers.map((L) => methodLine(L, "groups")));
  }
  slider.addEventListener("input", () => { state.k = counts[Number(slider.value)]; build(); });
  build();
  return root;
}

// Columns: each layer's groups, then the top classes. Link width ~ |attribution| (each link set scaled to its
// own largest magnitude: the units differ from one set to the next); positive links in the source group's
// colour, negative ones dashed in blue, so a class with only negative evidence is drawn as such, not missing.
function sankey(ctx, k, isolate) {
  const { data } = ctx;
  const W = 820, H = 300, pad = 16, nodeW = 14;
  const cols = data.layers.length + 1;
  const xs = Array.from({ length: cols }, (_, i) => pad + 90 + (i * (W - 2 * pad - 200)) / (cols - 1));
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "sankey-svg", role: "img", "aria-label": "group attribution flow" });
  const ys = (n) => Array.from({ length: n }, (_, i) => pad + ((i + 0.5) * (H - 2 * pad)) / n);
  const slot = (n) => (H - 2 * pad) / n;
  const linkLayer = svgEl("g", {});
  const nodeLayer = svgEl("g", {});
  svg.append(linkLayer, nodeLayer);
  const columns = [];
  data.layers.forEach((L, li) => {
    const opt = L.groups.options[k];
    columns.push(opt ? opt.colors.map((c, g) => ({ id: `${li}:${g}`, color: rgb(c), label: `g${g + 1}`, li, g })) : []);
  });
  columns.push(data.classes.map((c, j) => ({ id: `class:${c}`, color: "#888", label: data.labels[c], cls: true, j })));
  const links = [];
  for (let li = 0; li < data.layers.length; li++) {
    let m;
    if (li < data.layers.length - 1) {
      m = (data.flows[li] && data.flows[li].groups[k]) || null;
    } else {
      const opt = data.layers[li].groups.options[k];
      m = opt ? opt.attribution : null;
    }
    if (!m) continue;
    const max = Math.max(...m.flat().map((v) => Math.abs(v))) || 1;
    m.forEach((row, a) => row.forEach((v, b) => {
      if (Math.abs(v) >= 0.02 * max) links.push({ from: [li, a], to: [li + 1, b], w: Math.abs(v) / max, v });
    }));
  }
  for (const lk of links) {
    const [ca, a] = lk.from, [cb, b] = lk.to;
    const na = columns[ca][a], nb = columns[cb][b];
    if (!na || !nb) continue;
    const y1 = ys(columns[ca].length)[a], y2 = ys(columns[cb].length)[b];
    const x1 = xs[ca] + nodeW / 2, x2 = xs[cb] - nodeW / 2, mx = (x1 + x2) / 2;
    const width = Math.max(1, lk.w * slot(Math.max(columns[ca].length, columns[cb].length)) * 0.8);
    const neg = lk.v < 0;
    linkLayer.append(svgEl("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, class: neg ? "link neg" : "link",
      stroke: neg ? rgb(NEG) : na.color, "stroke-width": width, fill: "none", "data-src": na.id, "data-dst": nb.id,
      "data-sign": neg ? "-" : "+" },
    svgEl("title", { text: `${na.label} → ${nb.label}: ${fmt(lk.v, 3)}` })));
  }
  columns.forEach((col, ci) => {
    const y = ys(col.length), h = Math.max(8, slot(col.length) * 0.7);
    col.forEach((n, i) => {
      const r = svgEl("rect", { x: xs[ci] - nodeW / 2, y: y[i] - h / 2, width: nodeW, height: h, fill: n.color, rx: 3, class: "node", "data-node": n.id });
      if (!n.cls) {
        r.addEventListener("mouseenter", () => isolate(n.li, n.g));
        r.addEventListener("mouseleave", () => isolate(n.li, null));
      }
      nodeLayer.append(r);
      const tx = n.cls ? xs[ci] + nodeW : xs[ci] - nodeW;
      nodeLayer.append(svgEl("text", { x: tx, y: y[i] + 4, "text-anchor": n.cls ? "start" : "end", class: "node-label", text: n.label }));
    });
    const title = ci < data.layers.length ? data.layers[ci].layer : "classes";
    nodeLayer.append(svgEl("text", { x: xs[ci], y: H - 2, "text-anchor": "middle", class: "col-label", text: title }));
  });
  // In words: which classes receive only negative evidence from the last layer's groups.
  const lastOpt = data.layers[data.layers.length - 1].groups.options[k];
  let note = "Solid links: evidence for; dashed blue links: evidence against (width ~ magnitude).";
  if (lastOpt) {
    const onlyNeg = data.classes.filter((c, j) => lastOpt.attribution.every((row) => row[j] <= 0));
    if (onlyNeg.length) note += ` No group of ${data.layers[data.layers.length - 1].layer} carries positive evidence for ${onlyNeg.map((c) => `“${data.labels[c]}”`).join(", ")}${lastOpt.method === "ablation" ? ": removing any one group alone does not lower it" : " (by this linear estimate)"}.`;
  }
  return { svg, note: el("p", { class: "sankey-note", text: note }) };
}
