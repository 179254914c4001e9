// Activation grids: what the network sees at every position, for several layers side by side, with one zoom
// for all of them (scrolling one scrolls the others) and a toggle that fades cells by activation magnitude.
import { el } from "./util.js";

export function gridsView(ctx) {
  const { data } = ctx;
  const state = { zoom: 1, magnitude: false };
  const zoom = el("input", { type: "range", min: 1, max: 4, step: 0.25, value: 1, class: "grid-zoom", "aria-label": "zoom" });
  const mag = el("input", { type: "checkbox", class: "grid-mag" });
  const panels = el("div", { class: "row grids" });
  const root = el("section", { id: "grids", class: "view" },
    el("h2", { text: "Activation grids" }),
    el("p", { class: "lede", text: "Each cell is a picture of what the layer's activation vector at that position responds to: edges and textures early, object parts later." }),
    el("div", { class: "row controls" }, el("label", {}, "zoom ", zoom), el("label", {}, mag, " fade by magnitude")),
    panels);
  const items = [];
  let syncing = false;

  function drawOne(it) {
    const { canvas, img, grid } = it;
    const size = Math.round(300 * state.zoom);
    canvas.style.width = canvas.style.height = `${size}px`;
    const ctx2 = canvas.getContext("2d");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    ctx2.drawImage(img, 0, 0);
    if (state.magnitude && grid.magnitude) {
      const [h, w] = grid.shape;
      const cw = canvas.width / w, ch = canvas.height / h;
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        ctx2.fillStyle = `rgba(255,255,255,${(1 - grid.magnitude[y][x]) * 0.92})`;
        ctx2.fillRect(x * cw, y * ch, cw, ch);
      }
    }
  }

  function build() {
    items.length = 0;
    panels.replaceChildren(...data.layers.map((L) => {
      const g = L.grid;
      const box = el("div", { class: "grid-box" });
      const wrap = el("div", { class: "stack" }, el("div", { class: "grid-title", text: `${L.layer} (${L.shape[1]}×${L.shape[2]})` }), box);
      if (!g || !g.url) {
        box.append(el("div", { class: "grid-pending", text: g ? "rendering…" : "not computed" }));
        return wrap;
      }
      const canvas = el("canvas", { class: "grid-canvas", "data-layer": L.layer });
      const img = new Image();
      const it = { canvas, img, grid: g, box };
      img.onload = () => drawOne(it);
      img.src = g.url;
      box.append(canvas);
      box.addEventListener("scroll", () => {
        if (syncing) return;
        syncing = true;
        const fx = box.scrollLeft / Math.max(1, box.scrollWidth - box.clientWidth);
        const fy = box.scrollTop / Math.max(1, box.scrollHeight - box.clientHeight);
        for (const o of items) if (o.box !== box) {
          o.box.scrollLeft = fx * (o.box.scrollWidth - o.box.clientWidth);
          o.box.scrollTop = fy * (o.box.scrollHeight - o.box.clientHeight);
        }
        requestAnimationFrame(() => { syncing = false; });
      });
      items.push(it);
      return wrap;
    }));
  }
  zoom.addEventListener("input", () => { state.zoom = Number(zoom.value); items.forEach(drawOne); root.dataset.zoom = zoom.value; });
  mag.addEventListener("change", () => { state.magnitude = mag.checked; items.forEach(drawOne); root.dataset.magnitude = mag.checked ? "1" : "0"; });
  build();
  return { root, rebuild: build };
}
