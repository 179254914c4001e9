// Class concepts (blocklens.dataset.concepts): what a model relies on for one class across a folder. One card per
// concept in rank order (its direction's icon, the measured drop of the class's probability when it is removed,
// the predictions it flips, where its peaks sit); clicking a card shows the images where it fires most with its
// map over each; with a second class, the channels that carry the evidence for one over the other.
// Everything is in the page document: nothing is fetched.
import { el, svgEl, fmt, rgb, POS, NEG } from "./util.js";

const CONCEPT_PX = 64;      // icon size on a card
const CONCEPT_MAP_PX = 168; // an image with the concept's map over it in the panel

const pct = (v) => (v === null || v === undefined ? "–" : `${Math.round(100 * v)}%`);

export function conceptPatch(e, px = 48) {
  const where = `${e.path} @ (${e.x},${e.y}): ${fmt(e.value, 3)}`;
  return el("figure", { class: "ex cc-patch", "data-image": e.image, "data-path": e.path, title: where },
    e.src ? el("img", { src: e.src, width: px, height: px, alt: e.path, title: where })
      : el("span", { class: "cc-nopic", style: `width:${px}px;height:${px}px`, title: where }),
    el("figcaption", { text: fmt(e.value, 2) }));
}

export function conceptIcon(data, key, label, px = CONCEPT_PX) {
  const src = key && data.icons ? data.icons[key] : null;
  return src ? el("img", { class: "icon", src, width: px, height: px, alt: label, title: label, "data-icon": key })
    : el("span", { class: "icon cc-noicon", style: `width:${px}px;height:${px}px`, title: `${label} (no icon rendered)` });
}

// The 8x8 heat grid of where a concept's peaks sit over the square input frame, the border band hatched, the
// median centre of its top patches marked (and their median distance from it as a dashed circle).
export function conceptLocation(loc, px = 96) {
  const S = loc.frame;
  const n = loc.bins || loc.heat.length;
  const cell = S / n;
  let top = 0;
  for (const row of loc.heat) for (const v of row) top = Math.max(top, v);
  const svg = svgEl("svg", { class: "cc-loc", width: px, height: px, viewBox: `0 0 ${S} ${S}`, role: "img",
    "aria-label": `where its peaks sit in the ${S} px frame` });
  svg.append(svgEl("rect", { x: 0, y: 0, width: S, height: S, fill: "#f4f3ef" }));
  loc.heat.forEach((row, y) => row.forEach((v, x) => {
    if (!v) return;
    svg.append(svgEl("rect", { class: "cc-heat", x: x * cell, y: y * cell, width: cell, height: cell, "data-count": v,
      fill: rgb(POS, 0.15 + 0.85 * (v / (top || 1))) }, svgEl("title", { text: `${v} peak${v === 1 ? "" : "s"}` })));
  }));
  const b = loc.band;
  svg.append(svgEl("path", { class: "cc-band", "fill-rule": "evenodd", fill: "rgba(0,0,0,.10)", stroke: "rgba(0,0,0,.35)",
    "stroke-width": S / 120, "stroke-dasharray": `${S / 40} ${S / 60}`,
    d: `M0 0H${S}V${S}H0Z M${b} ${b}V${S - b}H${S - b}V${b}Z` }));
  const [cx, cy] = loc.centre;
  if (loc.spread > 0) svg.append(svgEl("circle", { cx, cy, r: loc.spread, fill: "none", stroke: "#1d1d1f", "stroke-width": S / 110, "stroke-dasharray": `${S / 45} ${S / 70}` }));
  const arm = S / 18;
  svg.append(svgEl("path", { class: "cc-centre", d: `M${cx - arm} ${cy}H${cx + arm}M${cx} ${cy - arm}V${cy + arm}`, stroke: "#1d1d1f", "stroke-width": S / 50 }));
  svg.append(svgEl("title", { text: `peak centres over the ${S} px frame (${n}×${n} cells); hatched: the ${Math.round(b)} px border band; +: the median centre of its top ${loc.top} patches, (${Math.round(cx)}, ${Math.round(cy)}), circle: their median distance from it (${Math.round(loc.spread)} px); ${pct(loc.border)} of them in the band` }));
  return svg;
}

// One image the concept fires on, its map a translucent heat layer on a canvas over the picture, its box outlined.
export function conceptMapFigure(data, c, e, scale) {
  const S = c.location.frame;
  const px = CONCEPT_MAP_PX;
  const canvas = el("canvas", { class: "cc-map", width: px, height: px, "data-image": e.image });
  const map = c.maps ? c.maps[String(e.image)] : null;
  const g = canvas.getContext("2d");
  if (map && map.length) {
    const h = map.length;
    const w = map[0].length;
    const small = document.createElement("canvas");
    small.width = w;
    small.height = h;
    const sg = small.getContext("2d");
    const img = sg.createImageData(w, h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      // high loading: the picture tinted orange; low loading: the picture veiled dark (t: 0..1 of the scale)
      const t = Math.min(1, Math.max(0, map[y][x]) / (scale || 1));
      const o = 4 * (y * w + x);
      const a = 0.55 * t * t + 0.5 * (1 - t);
      img.data[o] = Math.round((POS[0] * 0.55 * t * t) / a); img.data[o + 1] = Math.round((POS[1] * 0.55 * t * t) / a);
      img.data[o + 2] = Math.round((POS[2] * 0.55 * t * t) / a);
      img.data[o + 3] = Math.round(255 * a);
    }
    sg.putImageData(img, 0, 0);
    g.imageSmoothingEnabled = true;
    g.drawImage(small, 0, 0, px, px);
  }
  const [x0, y0, x1, y1] = e.box.map((v) => (v * px) / S);
  g.strokeStyle = "#ffd400";
  g.lineWidth = 2;
  g.strokeRect(x0 + 1, y0 + 1, Math.max(2, x1 - x0 - 2), Math.max(2, y1 - y0 - 2));
  g.strokeStyle = "rgba(0,0,0,.6)";
  g.lineWidth = 1;
  g.strokeRect(x0 - 0.5, y0 - 0.5, x1 - x0 + 1, y1 - y0 + 1);
  if (e.centre) {  // the peak position's centre (the box is its receptive field, shifted to lie inside the frame)
    const [cx, cy] = e.centre.map((v) => (v * px) / S);
    g.beginPath();
    g.arc(cx, cy, 3.5, 0, 2 * Math.PI);
    g.fillStyle = "#ffd400";
    g.fill();
    g.strokeStyle = "#1d1d1f";
    g.stroke();
  }
  const crop = data.crops ? data.crops[String(e.image)] : null;
  const where = `${e.path}: peak ${fmt(e.value, 3)} at (${e.x},${e.y}) of the layer's grid; box ${e.box.join(", ")} in the ${S} px frame`;
  return el("figure", { class: "cc-shot", "data-image": e.image, title: where },
    el("div", { class: "cc-stack", style: `width:${px}px;height:${px}px` },
      crop ? el("img", { src: crop, width: px, height: px, alt: e.path }) : el("span", { class: "cc-nopic" }),
      canvas),
    el("figcaption", {}, el("span", { class: "cc-path", text: e.path }), ` ${fmt(e.value, 2)}`));
}

function conceptPanel(data, c, rank) {
  const seen = new Set();
  const shots = c.examples.filter((e) => (seen.has(e.image) ? false : seen.add(e.image)));
  let scale = 0;
  for (const e of shots) for (const row of (c.maps && c.maps[String(e.image)]) || []) for (const v of row) scale = Math.max(scale, v);
  const name = `concept ${rank} (#${c.index})`;
  return el("div", { class: "cc-panel-body", "data-index": c.index },
    el("div", { class: "cc-panel-head" }, conceptIcon(data, c.key, name, 80),
      el("div", {},
        el("div", { class: "ex-title", text: `${name}: the ${data.label} images where it fires most` }),
        el("p", { class: "lede", text: `Each picture is the ${c.location.frame} px crop the model saw; over it, the concept's loading at each position of ${data.layer}: tinted orange where it is high, veiled dark where it is low (one scale for all of them, full at ${fmt(scale, 3)}); the yellow dot is its peak position, the box that position's receptive field.` }),
        el("button", { type: "button", class: "cc-close", text: "close", "data-testid": "concept-close" }))),
    el("div", { class: "cc-shots" }, ...shots.map((e) => conceptMapFigure(data, c, e, scale))));
}

function conceptCard(data, c, rank, top, onOpen) {
  const name = `concept ${rank} (#${c.index})`;
  const w = Math.min(100, (100 * Math.abs(c.importance)) / (top || 1));
  const stat = (label, value, title) => el("div", { class: "cc-stat", title }, el("span", { class: "cc-k", text: label }), el("span", { class: "cc-v", text: value }));
  const others = data.others || {};
  const card = el("article", { class: "cc-card", tabindex: 0, role: "button", "aria-label": `${name}: show its images`,
    "data-index": c.index, "data-rank": rank, "data-testid": "concept-card" },
    el("div", { class: "cc-top" },
      conceptIcon(data, c.key, name),
      el("div", { class: "cc-head" },
        el("div", { class: "cc-name", text: name }),
        el("div", { class: "cc-imp", title: "importance: the mean drop of the class's probability over its images when this concept's share of the activations is removed (± its standard deviation over the images); the mean drop of its log-probability in brackets" },
          el("span", { class: "bar cc-bar" }, el("span", { class: "bar-fill", style: `width:${Math.max(1, w)}%;background:${rgb(c.importance >= 0 ? POS : NEG)}` })),
          el("span", { class: "chan-val", text: `${c.importance.toFixed(3).replace("-", "−")} ± ${c.importance_sd.toFixed(3)} (log-prob ${c.logprob_drop.toFixed(2).replace("-", "−")})` })),
        el("div", { class: "cc-stats" },
          stat("flips", `${c.flipped} of ${c.predicted}`, `removing it changes the top-1 prediction of ${c.flipped} of the ${c.predicted} ${data.label} images predicted as ${data.label} (${pct(c.flips)})`),
          stat("coverage", pct(c.coverage), `share of the ${data.label} images where it holds at least 1/(2k) of the concept mass`),
          stat("on others", c.other_ratio === null || c.other_ratio === undefined ? "–" : `${fmt(c.other_ratio, 2)}×`,
            `its mean peak on ${others.label || "other classes'"} images${others.count ? ` (${others.count})` : ""} over its mean peak on ${data.label} images`),
          c.pair_drop === null || c.pair_drop === undefined ? null
            : stat("pair drop", fmt(c.pair_drop, 3), `mean drop of logit(${data.label}) − logit(${data.vs_label}) when it is removed`))),
      el("div", { class: "cc-where" }, conceptLocation(c.location), el("div", { class: "cc-k", text: `border ${pct(c.location.border)}` }))),
    c.flags.length ? el("ul", { class: "cc-flags" }, ...c.flags.map((f) => el("li", { class: "cc-flag", "data-code": f.code },
      el("span", { class: "cc-code", text: f.code }), ` ${f.text}`))) : null,
    el("div", { class: "cc-patches" }, ...c.examples.map((e) => conceptPatch(e))));
  card.addEventListener("click", (ev) => { if (!ev.target.closest(".cc-close")) onOpen(c, rank, card); });
  card.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onOpen(c, rank, card); } });
  return card;
}

function conceptHeader(data) {
  const s = data.sample || {};
  const chosen = (data.k_selection || []).find((r) => r.chosen);
  const kLine = data.k_selection && data.k_selection.length
    ? `k = ${data.k}${chosen ? ", chosen: " + data.k_rule : ""}`
    : `k = ${data.k} (given)`;
  const table = data.k_selection && data.k_selection.length ? el("table", { class: "cc-ktable" },
    el("thead", {}, el("tr", {}, ...["k", "relative error", "stability (resamples)", ""].map((t) => el("th", { text: t })))),
    el("tbody", {}, ...data.k_selection.map((r) => el("tr", { class: r.chosen ? "on" : "", "data-k": r.k },
      el("td", { text: r.k }), el("td", { text: fmt(r.relative_error, 3) }), el("td", { text: fmt(r.stability, 3) }),
      el("td", { text: r.chosen ? "chosen" : "" }))))) : null;
  const others = data.others || {};
  return el("header", { class: "cc-header" },
    el("h2", { text: `Concepts of ${data.label} · ${data.layer}` }),
    el("p", { class: "lede", "data-testid": "concepts-source" },
      `${data.model} · ${data.images.length} ${data.label} images of ${data.folder} · labels from ${data.labels_from}`,
      others.count ? ` · audited against ${others.count} ${others.label} images` : ""),
    el("p", { class: "method-line", "data-testid": "concepts-method", text: data.method }),
    el("p", { class: "method-line", text: `Sample: ${s.rows} positions (up to ${s.per_image} per image) of ${s.images} images × ${s.columns} columns${s.signed ? " ([relu(A), relu(−A)])" : ""}, weighted by ${s.weighting}; NMF relative error ${fmt(s.relative_error, 3)}.` }),
    el("details", { class: "cc-k" }, el("summary", { text: kLine }), table));
}

function vocabularyView(data) {
  const v = data.vocabulary;
  const side = (which, label) => {
    const chans = v.channels.filter((c) => c.side === which);
    const top = Math.max(1e-12, ...chans.map((c) => Math.abs(c.evidence)));
    return el("div", { class: "cc-side", "data-side": which },
      el("h3", { text: label }),
      ...chans.map((c) => el("div", { class: "cc-chan", "data-channel": c.channel },
        c.icon ? el("img", { class: "icon", src: c.icon, width: 56, height: 56, alt: `channel ${c.channel}`, title: `${data.layer}:${c.channel}` })
          : el("span", { class: "icon cc-noicon", style: "width:56px;height:56px" }),
        el("div", { class: "chan-text" },
          el("span", { class: "chan-name", text: `channel ${c.channel}` }),
          el("span", { class: "bar" }, el("span", { class: "bar-fill", style: `width:${Math.max(1, (100 * Math.abs(c.evidence)) / top)}%;background:${rgb(c.evidence >= 0 ? POS : NEG)}` })),
          el("span", { class: "chan-val", text: `evidence ${c.evidence >= 0 ? "+" : "−"}${fmt(Math.abs(c.evidence), 3)}` })),
        el("div", { class: "cc-patches" }, ...c.examples.map((e) => conceptPatch(e, 40))))));
  };
  return el("section", { id: "concepts-vocabulary", class: "view cc-vocab" },
    el("h2", { text: `${v.a_label} vs ${v.b_label} across the folder` }),
    el("p", { class: "lede", text: `The channels of ${data.layer} with the most evidence for one class over the other (${v.score}), over ${v.images} images of both: ${v.method}.` }),
    el("div", { class: "row" }, side("for", `for ${v.a_label}`), side("against", `for ${v.b_label}`)));
}

export function conceptsView(data) {
  const concepts = data.concepts || [];
  const top = Math.max(1e-12, ...concepts.map((c) => Math.abs(c.importance)));
  const panel = el("div", { class: "cc-panel", hidden: true, "data-testid": "concept-panel" });
  let open = null;
  const close = () => { open = null; panel.hidden = true; panel.replaceChildren(); for (const c of cards.children) c.classList.remove("on"); };
  const onOpen = (c, rank, card) => {
    if (open === c.index) { close(); return; }
    open = c.index;
    for (const o of cards.children) o.classList.toggle("on", o === card);
    panel.replaceChildren(conceptPanel(data, c, rank));
    panel.dataset.index = c.index;
    panel.hidden = false;
    panel.querySelector(".cc-close").addEventListener("click", close);
    if (panel.scrollIntoView) panel.scrollIntoView({ block: "nearest" });
  };
  const cards = el("div", { class: "cc-cards" }, ...concepts.map((c, i) => conceptCard(data, c, i + 1, top, onOpen)));
  const section = el("section", { id: "concepts", class: "view cc" }, conceptHeader(data),
    concepts.length ? el("p", { class: "lede", text: "Ranked by importance. Click a concept to see the images where it fires most, with its map." })
      : el("p", { class: "lede", text: "No concepts." }),
    cards, panel);
  const parts = [section];
  if (data.vocabulary) parts.push(vocabularyView(data));
  return parts;
}

export function mountConcepts(root, data) {
  root.replaceChildren(...conceptsView(data));
  root.dataset.ready = "1";
}
