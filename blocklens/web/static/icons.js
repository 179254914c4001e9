// Icons (feature visualizations) by store key: an <img> now, or a placeholder that fills in when the picture
// arrives (the app renders missing icons in the background and calls refreshIcons).
import { el } from "./util.js";

// a transparent pixel: a pending icon shows its striped background, not a broken-image glyph and alt text
const BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";

// A dead unit (no input moves it) is drawn as this tile, never as the grey picture its optimization left.
const DEAD = "data:image/svg+xml;utf8," + encodeURIComponent('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48"><rect width="48" height="48" fill="#f3f0ec"/><path d="M6 6L42 42M42 6L6 42" stroke="#d8cfc6" stroke-width="2"/><text x="24" y="28" font-family="sans-serif" font-size="11" text-anchor="middle" fill="#8a7f74">dead</text></svg>');

// A unit with no preferred stimulus (a blank image drives it as far as its icon) is drawn as this tile, with the figure.
const NO_PREFERENCE = "data:image/svg+xml;utf8," + encodeURIComponent('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48"><rect width="48" height="48" fill="#f4efe6"/><rect x="9" y="9" width="30" height="30" fill="none" stroke="#d6c7b0" stroke-width="2" stroke-dasharray="3 3"/><text x="24" y="22" font-family="sans-serif" font-size="7.5" text-anchor="middle" fill="#7d6a52">no preferred</text><text x="24" y="31" font-family="sans-serif" font-size="7.5" text-anchor="middle" fill="#7d6a52">stimulus</text></svg>');

function noPreferenceText(q) {
  const share = q.own ? Math.round((100 * q.blank) / q.own) : 100;
  return `no preferred stimulus: a blank image drives this unit to ${q.blank != null ? q.blank.toFixed(2) : "?"}, ` +
    `${share}% of its value on its own icon (${q.own != null ? q.own.toFixed(2) : "?"}); its maximum is the absence ` +
    "of its input, so the picture would show nothing it prefers";
}

// Per-icon quality figures by store key (blocklens.quality, computed with the explanation): tooltips, dead tiles.
export const ICON_QUALITY = {};

export function setIconQuality(byKey) { Object.assign(ICON_QUALITY, byKey || {}); }

function qualityTitle(label, q) {
  if (!q) return label || "";
  if (q.dead) return `${label} · dead: no input moves this unit (constant over the photographs and the icons)`;
  if (q.no_preference) return `${label} · ${noPreferenceText(q)}`;
  const bits = [q.specific ? "specific" : "not specific (another icon of this layer excites it more)"];
  if (q.strength != null) bits.push(`${q.strength.toFixed(1)}× the best photo`);
  if (q.contrast != null) bits.push(`contrast ${q.contrast.toFixed(2)}`);
  if (q.colourfulness != null) bits.push(`colourfulness ${Math.round(q.colourfulness)}`);
  if (q.saturated) bits.push("saturated at its layer's cap");
  return `${label} · ${bits.join(" · ")}`;
}

function paint(img, url) {
  const q = ICON_QUALITY[img.dataset.icon];
  img.title = qualityTitle(img.dataset.label, q);
  if (q && q.dead) { img.src = DEAD; img.alt = `${img.dataset.label} (dead unit)`; img.classList.add("dead"); img.classList.remove("pending"); return true; }
  if (q && q.no_preference) { img.src = NO_PREFERENCE; img.alt = `${img.dataset.label} (no preferred stimulus)`; img.classList.add("no-preference"); img.classList.remove("pending"); return true; }
  if (!url) return false;
  img.src = url; img.alt = img.dataset.label; img.classList.remove("pending");
  return true;
}

export function iconImg(icons, key, label, size = 56) {
  const url = key ? icons[key] : null;
  const img = el("img", { class: url ? "icon" : "icon pending", alt: "", title: label || "",
    width: size, height: size, "data-icon": key || "", "data-label": label || "" });
  img.src = BLANK;
  paint(img, url);
  return img;
}

export function refreshIcons(root, icons) {
  let filled = 0;
  for (const img of root.querySelectorAll("img.icon")) {
    const pending = img.classList.contains("pending");
    if (paint(img, pending ? icons[img.dataset.icon] : null) && pending) filled++;
  }
  return filled;
}

// Sprite sheets (one picture per layer, written by `blocklens precompute`): cut each cell into its own image
// and hand the URLs to onIcons({key: url}).
export function loadSprites(sprites, onIcons) {
  for (const s of sprites || []) {
    const sheet = new Image();
    sheet.onload = () => {
      const [h, w] = s.icon_size;
      const canvas = document.createElement("canvas");
      canvas.width = w;
      canvas.height = h;
      const g = canvas.getContext("2d");
      const out = {};
      for (const [key, [x, y]] of Object.entries(s.cells)) {
        g.clearRect(0, 0, w, h);
        g.drawImage(sheet, x, y, w, h, 0, 0, w, h);
        out[key] = canvas.toDataURL("image/png");
      }
      onIcons(out);
    };
    sheet.src = s.url;
  }
}
