// A concept dictionary (blocklens.dataset.dictionary): atoms learned over every position of a layer across a folder.
// A header with the dictionary's quality beside its baselines (a PCA of equal size, the layer's channels); one card
// per atom (its icon, top patches, the classes it drives with their measured drops, its flags in words); a sort, and
// a class search that ranks the atoms by what removing each does to that class; clicking a card opens the images
// where the atom fires most, its map over each. Everything is in the page document: nothing is fetched.
import { el, fmt, rgb, POS, NEG } from "./util.js";
import { conceptPatch, conceptIcon, conceptMapFigure } from "./concepts.js";

const ATOM_DRIVES = 3;  // drives shown on a card (the panel shows every one the document has)

const share = (v) => (v === null || v === undefined ? "–" : `${Math.round(100 * v)}%`);
const atomName = (a) => `atom ${a.index}`;
const topDrop = (a) => (a.drives.length ? a.drives[0].prob_drop : -Infinity);

// The quality table: each figure of the dictionary beside a PCA of equal size and the layer's channels.
function atomsQuality(data) {
  const q = data.quality || {};
  const pca = q.pca || {};
  const ch = q.channels || {};
  const k = data.atoms.length;
  const row = (name, title, mine, p, c) => el("tr", { title },
    el("th", { text: name }), el("td", { class: "at-mine", text: mine }), el("td", { text: p }), el("td", { text: c }));
  return el("table", { class: "at-quality", "data-testid": "atoms-quality" },
    el("thead", {}, el("tr", {}, el("th", {}), el("th", { text: `${(data.method || "").toUpperCase()}, ${k} atoms` }),
      el("th", { text: `PCA, ${k} components` }), el("th", { text: `channels (${ch.units ?? "–"})` }))),
    el("tbody", {},
      row("explained variance", "share of the held-out positions' variance the reconstruction keeps", share(q.explained_variance),
        share(pca.explained_variance), ch.explained_variance === undefined ? "100%" : share(ch.explained_variance)),
      row("active per position", "codes above 0.1% of the position's top code, on average over held-out positions",
        fmt(q.active_per_position, 1), fmt(pca.active_per_position, 1), fmt(ch.active_per_position, 1)),
      row("dead", "atoms never active on held-out positions (channels: never above zero)", `${q.dead ?? "–"} of ${k}`,
        pca.dead === undefined ? "–" : String(pca.dead), ch.dead === undefined ? "–" : String(ch.dead)),
      row("stability", "mean cosine of atoms matched one to one with a fit from another seed (PCA: two halves of the images)",
        fmt(q.stability, 2), fmt(pca.stability, 2), "–"),
      ...readabilityRows(q.readability, row)));
}

// Readability (when measured): the share of two-alternative trials in which the judge's features tell a unit's top
// patch from a bottom or a random one, given its other top patches (chance 0.5), ± its standard error over units.
function readabilityRows(r, row) {
  if (!r || !r.atoms || !r.channels) return [];
  const f = (x) => (x && x.score !== undefined ? `${fmt(x.score, 2)} ± ${fmt(x.se_units, 2)}` : "–");
  const title = (c) => `share of two-alternative trials (chance 0.5) in which ${r.judge} tell a unit's top patch from a ${c} patch, given its ${r.top - 1} other top patches; ± standard error over units`;
  return ["bottom", "random"].map((c) => row(`readability vs ${c}`, title(c), f(r.atoms[c]), "–", f(r.channels[c])));
}

function atomsHeader(data) {
  const q = data.quality || {};
  const flagged = data.atoms.filter((a) => a.flags.length).length;
  return el("header", { class: "cc-header at-header" },
    el("h2", { text: `Concept dictionary · ${data.layer} · ${data.model}` }),
    el("p", { class: "lede", "data-testid": "atoms-source" },
      `${data.atoms.length} atoms (${(data.method || "").toUpperCase()}) learned over every position of ${data.layer} in ${data.images.length} images of ${data.folder}, no labels. `,
      flagged ? el("strong", { text: `${flagged} flagged.` }) : "None flagged."),
    el("div", { class: "row at-qrow" }, atomsQuality(data),
      el("p", { class: "method-line at-qnote", text: q.note ? `Measured on ${q.heldout_images ?? "the"} held-out images: ${q.note}.` : "" })),
    el("p", { class: "method-line", text: "Drives: the classes whose logit drops most, on average, when the atom's share of the activations is removed from the images where it fires (where its peak reaches 25% of its 99th-percentile peak) and the rest of the network is run. Bars: the mean drop of the class's probability (upper) and of its logit (lower, fainter), each on one scale for the page. \"others\": the share of the log-probability drop on images the model does not predict as the class, in red where the atom is a cue for it." }));
}

// A probability drop: three places, "<0.001" for a small one that is not zero.
const pDrop = (v) => (v === null || v === undefined ? "–" : v !== 0 && Math.abs(v) < 0.001 ? `${v < 0 ? "−" : ""}<0.001`
  : `${v < 0 ? "−" : ""}${Math.abs(v).toFixed(3)}`);
const logit = (v) => (v === null || v === undefined ? "–" : `${v < 0 ? "−" : "+"}${Math.abs(v).toFixed(2)}`);

// One drive as a row: the class, two bars (its probability drop over its logit drop, each on one scale for the
// page), the numbers, and the share on other classes' images (marked when the drive is a cue).
function driveRow(d, top) {
  const w = (v, m) => Math.min(100, Math.max(1, (100 * Math.abs(v)) / (m || 1)));
  const fill = (v, m, cls) => el("span", { class: `bar-fill ${cls}`, style: `width:${w(v, m)}%;background:${rgb(v >= 0 ? POS : NEG, cls === "at-lg" ? 0.45 : 1)}` });
  const cue = d.other_share >= 0.5 && d.other_prob_drop >= 0.05;
  return el("div", { class: "at-drive", "data-cls": d.cls,
    title: `${d.label}: mean drop of its probability ${pDrop(d.prob_drop)}, of its logit ${logit(d.logit_drop)}, of its log-probability ${logit(d.logprob_drop)}, over the ${d.images} images where the atom fires; ${share(d.other_share)} of the log-probability drop is on images not predicted as ${d.label} (there its probability drops by ${pDrop(d.other_prob_drop)}); removing it changes ${d.flipped} of the ${d.predicted} predicted as ${d.label}` },
    el("span", { class: "at-cls", text: d.label }),
    el("span", { class: "at-bars" }, el("span", { class: "bar at-bar" }, fill(d.prob_drop, top.prob, "at-pb")),
      el("span", { class: "bar at-bar at-lbar" }, fill(d.logit_drop, top.logit, "at-lg"))),
    el("span", { class: "chan-val at-nums" }, `p ${pDrop(d.prob_drop)} · logit ${logit(d.logit_drop)}`),
    el("span", { class: "at-others" + (cue ? " hi" : ""), text: `others ${share(d.other_share)}` }));
}

function flagList(a) {
  return a.flags.length ? el("ul", { class: "cc-flags" }, ...a.flags.map((f) => el("li", { class: "cc-flag", "data-code": f.code },
    el("span", { class: "cc-code", text: f.code }), ` ${f.text}`))) : null;
}

function atomCard(data, a, top, onOpen) {
  const card = el("article", { class: "cc-card at-card" + (a.flags.length ? " flagged" : ""), tabindex: 0, role: "button",
    "aria-label": `${atomName(a)}: show its images`, "data-index": a.index, "data-testid": "atom-card" },
    el("div", { class: "cc-top" },
      conceptIcon(data, a.key, atomName(a)),
      el("div", { class: "cc-head" },
        el("div", { class: "cc-name" }, atomName(a),
          ...a.flags.map((f) => el("span", { class: "at-chip", "data-code": f.code, text: f.code })),
          el("span", { class: "at-fires", text: `fires on ${a.fires} of ${data.images.length} images (${share(a.coverage)})` })),
        el("div", { class: "at-search-line", hidden: true }),
        el("div", { class: "at-drives" }, a.drives.length ? a.drives.slice(0, ATOM_DRIVES).map((d) => driveRow(d, top))
          : el("span", { class: "cc-k", text: "drives no class (removed on no image)" })))),
    flagList(a),
    el("div", { class: "cc-patches" }, ...a.examples.map((e) => conceptPatch(e, 40))));
  card.addEventListener("click", () => onOpen(a, card));
  card.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onOpen(a, card); } });
  return card;
}

// The opened atom: every drive, its flags, and its top images whole, its map over each (crops the page holds).
function atomPanel(data, a, top) {
  const withCrop = a.examples.filter((e) => data.crops && data.crops[String(e.image)]);
  const seen = new Set();
  const shots = (withCrop.length ? withCrop : a.examples).filter((e) => (seen.has(e.image) ? false : seen.add(e.image)));
  let scale = 0;
  for (const e of shots) for (const row of (a.maps && a.maps[String(e.image)]) || []) for (const v of row) scale = Math.max(scale, v);
  const loc = a.location || {};
  const where = loc.centre ? ` Its top ${loc.top} patches are centred at (${Math.round(loc.centre[0])}, ${Math.round(loc.centre[1])}) ± ${Math.round(loc.spread)} px (median) of the ${loc.frame} px frame.` : "";
  return el("div", { class: "cc-panel-body", "data-index": a.index },
    el("div", { class: "cc-panel-head" }, conceptIcon(data, a.key, atomName(a), 80),
      el("div", { class: "at-panel-text" },
        el("div", { class: "ex-title", text: `${atomName(a)}: the images where it fires most` }),
        el("p", { class: "lede", text: `Each picture is the ${loc.frame} px crop the model saw; over it, the atom's code at each position of ${data.layer}: tinted orange where it is high, veiled dark where it is low (one scale for all of them, full at ${fmt(scale, 3)}); the yellow dot is its peak position, the box that position's receptive field.${where}` }),
        el("div", { class: "at-drives" }, ...a.drives.map((d) => driveRow(d, top))),
        flagList(a),
        el("button", { type: "button", class: "cc-close", text: "close", "data-testid": "atom-close" }))),
    el("div", { class: "cc-shots" }, ...shots.map((e) => conceptMapFigure(data, a, e, scale))));
}

// The class search: a name (exact, else the one class containing it) among the classes some atom moves.
function findClass(drops, text) {
  const t = text.trim().toLowerCase();
  if (!t) return { cls: null, matches: [] };
  const named = Object.entries(drops.labels || {});
  const exact = named.filter(([, l]) => l.toLowerCase() === t);
  const hits = exact.length ? exact : named.filter(([, l]) => l.toLowerCase().includes(t));
  return { cls: hits.length === 1 ? hits[0][0] : null, matches: hits.map(([, l]) => l) };
}

function searchBox(data, onClass) {
  const drops = data.class_drops || { labels: {}, atoms: {} };
  const best = {};
  for (const row of Object.values(drops.atoms || {})) for (const [c, v] of Object.entries(row)) best[c] = Math.max(best[c] ?? -Infinity, v);
  const names = Object.entries(drops.labels || {}).sort((p, q) => (best[q[0]] ?? 0) - (best[p[0]] ?? 0));
  const list = el("datalist", { id: "atoms-classes" }, ...names.map(([, l]) => el("option", { value: l })));
  const note = el("span", { class: "cc-k at-search-note", "data-testid": "atoms-search-note" });
  const input = el("input", { type: "search", list: "atoms-classes", placeholder: "a class name", autocomplete: "off",
    spellcheck: "false", "data-testid": "atoms-search", "aria-label": "rank the atoms by a class" });
  input.addEventListener("input", () => {
    const { cls, matches } = findClass(drops, input.value);
    if (!input.value.trim()) note.textContent = "";
    else if (cls === null) note.textContent = matches.length ? `several match: ${matches.slice(0, 6).join(", ")}${matches.length > 6 ? ", …" : ""}`
      : `no atom moves the probability of a class named “${input.value.trim()}” by ${drops.least} or more`;
    else note.textContent = `ranked by the mean drop of p(${drops.labels[cls]}) when each atom is removed`;
    onClass(cls);
  });
  return el("label", { class: "at-search" }, "rank by class ", input, list, note);
}

function sortBox(onSort) {
  const pick = el("select", { "data-testid": "atoms-sort", "aria-label": "sort the atoms" },
    el("option", { value: "drive" }, "top drive's probability drop"),
    el("option", { value: "flags" }, "flagged first"),
    el("option", { value: "coverage" }, "most images first"),
    el("option", { value: "index" }, "atom number"));
  pick.addEventListener("change", () => onSort(pick.value));
  return el("label", {}, "sort ", pick);
}

const SORTS = {
  drive: (p, q) => topDrop(q) - topDrop(p),
  flags: (p, q) => q.flags.length - p.flags.length || topDrop(q) - topDrop(p),
  coverage: (p, q) => q.coverage - p.coverage || topDrop(q) - topDrop(p),
  index: (p, q) => p.index - q.index,
};

// What the search adds to a card: the class's drop for this atom (and its full figures when it is a top drive).
function searchLine(line, a, cls, drops) {
  line.hidden = cls === null;
  if (cls === null) { line.replaceChildren(); return; }
  const v = (drops.atoms[String(a.index)] || {})[cls];
  const d = a.drives.find((x) => String(x.cls) === cls);
  line.replaceChildren(el("span", { class: "at-for", text: `${drops.labels[cls]}: ` }),
    v === undefined ? `p drop under ${drops.least}` : `p drop ${pDrop(v)}`,
    d ? ` · logit ${logit(d.logit_drop)} · others ${share(d.other_share)}` : "");
}

export function atomsView(data) {
  const atoms = data.atoms || [];
  const drops = data.class_drops || { labels: {}, atoms: {} };
  const most = (f) => Math.max(1e-12, ...atoms.flatMap((a) => a.drives.map((d) => Math.abs(f(d)))));
  const top = { prob: most((d) => d.prob_drop), logit: most((d) => d.logit_drop) };
  const panel = el("div", { class: "cc-panel", hidden: true, "data-testid": "atom-panel" });
  const state = { sort: "drive", cls: null, open: null };
  const close = () => {
    state.open = null; panel.hidden = true; panel.replaceChildren();
    for (const c of cards.children) c.classList.remove("on");
  };
  const onOpen = (a, card) => {
    if (state.open === a.index) { close(); return; }
    state.open = a.index;
    for (const o of cards.children) o.classList.toggle("on", o === card);
    card.after(panel);  // the row below the card, full width (the grid backfills the cards around it)
    panel.replaceChildren(atomPanel(data, a, top));
    panel.dataset.index = a.index;
    panel.hidden = false;
    panel.querySelector(".cc-close").addEventListener("click", close);
    if (panel.scrollIntoView) panel.scrollIntoView({ block: "nearest" });
  };
  const byIndex = new Map(atoms.map((a) => [a.index, atomCard(data, a, top, onOpen)]));
  const cards = el("div", { class: "cc-cards at-cards" }, panel);
  const order = () => {
    let ranked = [...atoms].sort(SORTS[state.sort]);
    if (state.cls !== null) {
      const v = (a) => (drops.atoms[String(a.index)] || {})[state.cls] ?? 0;
      ranked = ranked.sort((p, q) => v(q) - v(p));
    }
    ranked.forEach((a, i) => {
      const card = byIndex.get(a.index);
      card.dataset.rank = i + 1;
      searchLine(card.querySelector(".at-search-line"), a, state.cls, drops);
    });
    const open = panel.hidden ? null : panel;
    cards.replaceChildren(...ranked.map((a) => byIndex.get(a.index)));
    if (open) byIndex.get(state.open).after(open);
  };
  order();
  const bar = el("div", { class: "app-bar at-bar-controls" },
    sortBox((s) => { state.sort = s; order(); }), searchBox(data, (c) => { state.cls = c; order(); }));
  return [el("section", { id: "atoms", class: "view cc at" }, atomsHeader(data),
    atoms.length ? el("p", { class: "lede", text: "Click an atom to see the images where it fires most, with its map." }) : el("p", { class: "lede", text: "No atoms." }),
    bar, cards)];
}

export function mountAtoms(root, data) {
  root.replaceChildren(...atomsView(data));
  root.dataset.ready = "1";
}
