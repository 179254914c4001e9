// Small helpers shared by every view: DOM building, decoding the page document, colour maps.
// Convention (the report bundles these modules into one script): top-level names are unique across modules,
// imports are single-line `import { a, b } from "./x.js";`, and exports are `export function|const|class`.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c) node.append(c);
  return node;
}

// {shape, b64} little-endian float32 -> {shape, data: Float32Array}
export function decodeF32(packed) {
  if (!packed) return null;
  const bin = atob(packed.b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return { shape: packed.shape, data: new Float32Array(bytes.buffer) };
}

// Channel c of a (C, H, W) tensor as an H x W nested array.
export function channelMap(act, c) {
  const [, h, w] = act.shape;
  const out = [];
  for (let y = 0; y < h; y++) {
    const row = [];
    for (let x = 0; x < w; x++) row.push(act.data[c * h * w + y * w + x]);
    out.push(row);
  }
  return out;
}

export function fmt(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1000)) return v.toExponential(1);
  return v.toFixed(digits);
}

export function rgb(c, alpha = 1) {
  return `rgba(${c[0]},${c[1]},${c[2]},${alpha})`;
}

// Diverging map for signed values: positive orange-red, negative blue (the article's attribution colours).
export const POS = [230, 85, 13];
export const NEG = [49, 130, 189];

export function mapExtent(map) {
  let m = 0;
  for (const row of map) for (const v of row) m = Math.max(m, Math.abs(v));
  return m || 1;
}

export function diffRows(a, b) {
  return a.map((v, i) => v - b[i]);
}

export function topIndices(values, n, sign = 1) {
  return values.map((v, i) => [sign * v, i]).filter(([v]) => v > 0).sort((p, q) => q[0] - p[0]).slice(0, n)
    .map(([, i]) => i);
}

export function mapDiff(a, b) {
  return a.map((row, y) => row.map((v, x) => v - b[y][x]));
}

// A value bar: width proportional to |v| / max, coloured by sign.
export function bar(v, max, color) {
  const w = Math.max(1, Math.round((100 * Math.abs(v)) / (max || 1)));
  return el("span", { class: "bar" }, el("span", { class: "bar-fill", style: `width:${Math.min(100, w)}%;background:${color || (v >= 0 ? rgb(POS) : rgb(NEG))}` }));
}

// How a view's numbers were computed and how faithful they measured on this image: one short line.
const SCORE_WORDS = { logit: "logit", logprob: "log-probability", pair: "logit difference" };
const METHOD_WORDS = { linear: "activation × gradient", path: "path from zero", ablation: "measured removal effect" };

export function methodLine(L, view) {
  const m = (L && L.methods) || {};
  const f = L && L.faithfulness;
  const how = m[view] ? `${L.layer}: ${METHOD_WORDS[m[view]] || m[view]} of the ${SCORE_WORDS[m.score] || m.score}.` : "";
  const check = f && f.lines && f.lines[view] ? ` Faithfulness on this image: ${f.lines[view]}` : "";
  return el("p", { class: "method-line", "data-view": view, text: how + check });
}
