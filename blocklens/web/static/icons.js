// Icons (feature visualizations) by store key: an <img> now, or a placeholder that fills in when the picture
// arrives (the app renders missing icons in the background and calls refreshIcons).
import { el } from "./util.js";

export function iconImg(icons, key, label, size = 56) {
  const url = key ? icons[key] : null;
  const img = el("img", { class: url ? "icon" : "icon pending", alt: label || "", title: label || "",
    width: size, height: size, "data-icon": key || "" });
  if (url) img.src = url;
  return img;
}

export function refreshIcons(root, icons) {
  let filled = 0;
  for (const img of root.querySelectorAll("img.icon.pending")) {
    const url = icons[img.dataset.icon];
    if (url) { img.src = url; img.classList.remove("pending"); filled++; }
  }
  return filled;
}
