// Atoms at a layer (explain with a concept dictionary): the image read in the dictionary's atoms. A semantic
// dictionary in atoms (each position's top atom as its icon, faded by its code; hover a cell for its top atoms),
// bars of attribution to atoms for each explained class with the residual as its own bar, and the removal check:
// each checked atom's predicted drop (its attribution) against the measured drop when its share is removed.
import { el, svgEl, fmt, rgb, POS, NEG } from "./util.js";
import { Overlay } from "./overlay.js";
import { iconImg } from "./icons.js";

const AX_BARS = 10;   // atoms shown per class (largest attribution in size), then the residual
const AX_SCORE_WORDS = { logit: "logit", logprob: "log-probability" };

// An atom without an icon: a tile in a hue of its own, with its number.
function atomTile(i, px) {
  const hue = Math.round((i * 137.508) % 360);
  return el("span", { class: "ax-tile", style: `width:${px}px;height:${px}px;background:hsl(${hue},55%,72%);font-size:${Math.max(9, Math.round(px / 3))}px`,
    title: `atom ${i} (no icon rendered)`, text: String(i) });
}

function atomIcon(ctx, A, i, px) {
  const info = A.dictionary.shown[String(i)];
  return info && info.key ? iconImg(ctx.icons, info.key, `atom ${i}`, px) : atomTile(i, px);
}

function drivesText(A, i) {
  const info = A.dictionary.shown[String(i)];
  if (!info || !info.drives.length) return "";
  return "drives " + info.drives.slice(0, 2).map((d) => `${d.label} ${d.logit_drop >= 0 ? "+" : ""}${fmt(d.logit_drop)}`).join(", ") + " (logit)";
}

export function explainAtomsView(ctx) {
  const { data } = ctx;
  const A = data.atoms;
  const [H, W] = A.shape;
  const D = A.dictionary;
  const state = { cls: 0, atom: null };
  const overlay = new Overlay(data.image, [H, W], 300, A.layer).showGrid(true);
  const cellPx = Math.max(22, Math.min(44, Math.floor(300 / W)));
  const grid = el("div", { class: "ax-grid", style: `grid-template-columns:repeat(${W},${cellPx}px)`, "data-testid": "atoms-grid" });
  const side = el("div", { class: "dict-side ax-side" });
  const tabs = el("div", { class: "tabs" }, ...A.classes.map((c, j) => el("button", { class: "tab", "data-class": c, onclick: () => { state.cls = j; build(); } }, A.labels[j])));
  const bars = el("div", { class: "ax-bars", "data-testid": "atoms-bars" });
  const removal = el("div", { class: "ax-removal", "data-testid": "atoms-removal" });
  const how = el("p", { class: "method-line" });
  const root = el("section", { id: "atoms", class: "view", "data-layer": A.layer },
    el("h2", { text: `Atoms at ${A.layer}` }),
    el("p", { class: "lede", text: `The image read in concept dictionary ${D.key}: ${D.atoms} atoms (${(D.method || "").toUpperCase()}) learned over every position of ${D.layer} in ${D.images} images of ${D.folder}. Each cell shows the atom that fires most there (faded where it fires little); hover a cell for its top atoms, hover an atom for where it fires.` }),
    el("div", { class: "row" }, overlay.root, grid, side),
    el("div", { class: "row controls" }, el("span", { text: "attribution to" }), tabs),
    el("div", { class: "row" }, bars, removal), how);

  let top = 0;
  for (const row of A.top_codes) for (const v of row) top = Math.max(top, v[0] || 0);
  top = top || 1;

  function atomMap(i) { return A.maps[String(i)] || null; }

  function hoverAtom(i) {
    state.atom = i;
    const m = i === null ? null : atomMap(i);
    overlay.heat(m, { max: top, color: POS });
    for (const n of root.querySelectorAll("[data-atom]")) n.classList.toggle("on", i !== null && Number(n.dataset.atom) === i);
    root.dataset.atom = i === null ? "" : String(i);
  }

  function showCell(x, y) {
    if (x === null) { overlay.mark(null); return; }
    overlay.mark(x, y);
    const ids = A.top_atoms[y][x], vals = A.top_codes[y][x];
    side.replaceChildren(el("div", { class: "dict-head", text: `${A.layer} at (${x}, ${y})` }),
      ...ids.map((a, k) => (a < 0 ? null : el("div", { class: "dict-entry", "data-atom": a },
        atomIcon(ctx, A, a, 44),
        el("div", { class: "chan-text" }, el("div", { class: "chan-name", text: `atom ${a}` }),
          el("span", { class: "bar" }, el("span", { class: "bar-fill", style: `width:${Math.max(1, Math.min(100, (100 * vals[k]) / top))}%;background:#555` })),
          el("div", { class: "chan-val", text: `code ${fmt(vals[k])}${drivesText(A, a) ? " · " + drivesText(A, a) : ""}` }))))));
    side.dataset.cell = `${x},${y}`;
  }

  // the semantic dictionary in atoms: each position's top atom
  grid.replaceChildren(...A.top_atoms.flatMap((row, y) => row.map((ids, x) => {
    const a = ids[0], v = A.top_codes[y][x][0];
    const cell = el("div", { class: "ax-cell", style: `width:${cellPx}px;height:${cellPx}px;opacity:${a < 0 ? 0.15 : (0.25 + 0.75 * Math.sqrt(v / top)).toFixed(2)}`,
      "data-cell": `${x},${y}`, title: a < 0 ? "no atom" : `(${x}, ${y}): atom ${a}, code ${fmt(v)}` },
    a < 0 ? null : atomIcon(ctx, A, a, cellPx - 2));
    cell.addEventListener("mouseenter", () => { showCell(x, y); hoverAtom(a < 0 ? null : a); });
    return cell;
  })));
  grid.addEventListener("mouseleave", () => hoverAtom(null));
  overlay.onHover((x, y) => showCell(x, y));

  function barRow(label, icon, v, max, attrs, title) {
    const w = Math.max(1, Math.min(50, (50 * Math.abs(v)) / (max || 1)));
    const fill = el("span", { class: "bar-fill", style: `width:${w}%;margin-left:${v >= 0 ? 50 : 50 - w}%;background:${rgb(v >= 0 ? POS : NEG)}` });
    return el("div", { class: "ax-row", ...attrs, title },
      icon, el("span", { class: "ax-name", text: label }),
      el("span", { class: "bar ax-bar" }, el("span", { class: "ax-zero" }), fill),
      el("span", { class: "chan-val", text: `${v >= 0 ? "+" : ""}${fmt(v)}` }));
  }

  function build() {
    const j = state.cls;
    root.dataset.cls = A.classes[j];
    for (const b of tabs.children) b.classList.toggle("on", Number(b.dataset.class) === A.classes[j]);
    const col = A.attribution.map((r) => r[j]);
    const order = col.map((v, i) => [v, i]).sort((p, q) => Math.abs(q[0]) - Math.abs(p[0])).slice(0, AX_BARS).sort((p, q) => q[0] - p[0]);
    const res = A.residual[j], whole = A.whole[j];
    const max = Math.max(...order.map(([v]) => Math.abs(v)), Math.abs(res)) || 1;
    const unit = AX_SCORE_WORDS[A.score] || A.score;
    const rows = order.map(([v, i]) => {
      const r = barRow(`atom ${i}`, atomIcon(ctx, A, i, 32), v, max, { "data-atom": i },
        `atom ${i}: ${fmt(v, 3)} of ${A.labels[j]}'s ${unit}${drivesText(A, i) ? "; across the folder it " + drivesText(A, i) : ""}`);
      r.addEventListener("mouseenter", () => hoverAtom(i));
      r.addEventListener("mouseleave", () => hoverAtom(null));
      return r;
    });
    const rest = col.reduce((s, v) => s + v, 0) - order.reduce((s, [v]) => s + v, 0);
    bars.replaceChildren(
      el("div", { class: "ax-head", text: `${A.labels[j]}: attribution to atoms (${unit})` }), ...rows,
      barRow(`${A.attribution.length - order.length} other atoms`, el("span", { class: "ax-tile ax-rest", style: "width:32px;height:32px" }), rest, max, { class: "ax-row ax-others" }, "the other atoms together"),
      barRow("residual", el("span", { class: "ax-tile ax-res", style: "width:32px;height:32px", text: "R" }), res, max, { class: "ax-row ax-residual", "data-testid": "atoms-residual" },
        "what the atoms do not reconstruct: activation − codes × atoms"),
      el("div", { class: "ax-total", text: `whole layer ${whole >= 0 ? "+" : ""}${fmt(whole)} = atoms + residual${A.adds_up[j] < 1e-6 ? " (exactly, to rounding)" : ` (to ${fmt(A.adds_up[j], 1)} relative)`}` }));
    removal.replaceChildren(...removalFigure(A, j, hoverAtom));
    how.textContent = `Attribution: activation × gradient of each class's ${unit}: each atom's code times the gradient along its direction, summed over positions; the residual is the same for what the atoms do not reconstruct (activation − codes × atoms: relative error ${fmt(A.relative_error)} on this image), so atoms and residual add up to the whole layer's. The removal check removes each atom's exact share of the activations (every element split among the atoms in proportion to what each reconstructs there), as the dictionary's own removals do.`;
  }
  build();
  // start on the position where the atoms fire most, so the side panel is never empty
  let best = [0, 0], m = -1;
  A.top_codes.forEach((row, y) => row.forEach((v, x) => { if ((v[0] || 0) > m) { m = v[0]; best = [x, y]; } }));
  showCell(best[0], best[1]);
  return root;
}

// Predicted drop (attribution) against the measured drop when each checked atom's share is removed, with y = x.
function removalFigure(A, j, hoverAtom) {
  const c = A.removal[j];
  const S = 240, pad = 34;
  const vals = [...c.predicted, ...c.actual];
  let lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
  if (hi - lo < 1e-9) hi = lo + 1;
  const m = 0.06 * (hi - lo); lo -= m; hi += m;
  const sx = (v) => pad + ((v - lo) / (hi - lo)) * (S - pad - 8);
  const sy = (v) => S - pad - ((v - lo) / (hi - lo)) * (S - pad - 8);
  const svg = svgEl("svg", { viewBox: `0 0 ${S} ${S}`, width: S, height: S, class: "ax-scatter", role: "img", "aria-label": "predicted against measured drop per atom" });
  svg.append(svgEl("line", { x1: sx(lo), y1: sy(lo), x2: sx(hi), y2: sy(hi), class: "ax-diag" }),
    svgEl("line", { x1: sx(lo), y1: sy(0), x2: sx(hi), y2: sy(0), class: "ax-axis" }),
    svgEl("line", { x1: sx(0), y1: sy(lo), x2: sx(0), y2: sy(hi), class: "ax-axis" }),
    svgEl("text", { x: S / 2 + pad / 2, y: S - 6, "text-anchor": "middle", class: "ax-label", text: "predicted drop (attribution)" }),
    svgEl("text", { x: 10, y: S / 2 - pad / 2, "text-anchor": "middle", class: "ax-label", transform: `rotate(-90 10 ${S / 2 - pad / 2})`, text: "measured drop" }));
  c.atoms.forEach((a, k) => {
    const p = c.predicted[k], q = c.actual[k];
    const g = svgEl("g", { "data-atom": a, class: "ax-pt" },
      svgEl("circle", { cx: sx(p), cy: sy(q), r: 5, fill: rgb(p >= 0 ? POS : NEG, 0.85) }),
      svgEl("text", { x: sx(p) + 7, y: sy(q) + 4, class: "ax-ptlabel", text: String(a) }),
      svgEl("title", { text: `atom ${a}: predicted ${fmt(p, 3)}, measured ${fmt(q, 3)}` }));
    g.addEventListener("mouseenter", () => hoverAtom(a));
    g.addEventListener("mouseleave", () => hoverAtom(null));
    svg.append(g);
  });
  const rc = c.rank_correlation === null ? "–" : fmt(c.rank_correlation);
  const together = c.together.length ? ` Removing atoms ${c.together.join(", ")} together takes ${c.label} from ${(100 * c.prob).toFixed(0)}% to ${(100 * c.prob_without).toFixed(0)}%.` : "";
  return [el("div", { class: "ax-head", text: "Removal check" }), svg,
    el("p", { class: "method-line ax-check", "data-testid": "atoms-check",
      text: `The ${c.atoms.length} atoms with the largest attribution, each removed alone (its share subtracted, the rest of the network run): rank correlation ${rc} between predicted and measured drops, top atom ${c.top_agrees ? "agrees" : "does NOT agree"}; sums ${fmt(c.predicted_sum)} predicted, ${fmt(c.actual_sum)} measured (the shares' own linear attribution: rank correlation ${c.share_rank_correlation === null ? "–" : fmt(c.share_rank_correlation)}).${together}` })];
}
