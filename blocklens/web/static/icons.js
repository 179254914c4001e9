// Icons (feature visualizations) by store key: an <img> now, or a placeholder that fills in when the picture
// arrives (the app renders missing icons in the background and calls refreshIcons).
import { el } from "./util.js";

// a transparent pixel: a pending icon shows its striped background, not a broken-image glyph and alt text
const BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";

export function iconImg(icons, key, label, size = 56) {
  const url = key ? icons[key] : null;
  const img = el("img", { class: url ? "icon" : "icon pending", alt: url ? label || "" : "", title: label || "",
    width: size, height: size, "data-icon": key || "", "data-label": label || "" });
  img.src = url || BLANK;
  return img;
}

export function refreshIcons(root, icons) {
  let filled = 0;
  for (const img of root.querySelectorAll("img.icon.pending")) {
    const url = icons[img.dataset.icon];
    if (url) { img.src = url; img.alt = img.dataset.label; img.classList.remove("pending"); filled++; }
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
