// The photo with a layer's grid over it: heat maps, cell colours, a highlighted cell, and pointer -> cell.
import { el, POS, NEG, mapExtent } from "./util.js";

export class Overlay {
  // imageUrl: the model's crop; grid: [H, W] of the layer; size: CSS pixels of the square.
  constructor(imageUrl, grid, size = 240, label = "") {
    this.h = grid[0];
    this.w = grid[1];
    this.size = size;
    this.img = el("img", { class: "ov-img", src: imageUrl, alt: label || "input image", draggable: "false" });
    this.canvas = el("canvas", { class: "ov-canvas", width: size * 2, height: size * 2 });
    this.root = el("div", { class: "overlay", style: `width:${size}px;height:${size}px`, "data-grid": `${this.h}x${this.w}` },
      this.img, this.canvas, label ? el("div", { class: "ov-label", text: label }) : null);
    this.ctx = this.canvas.getContext("2d");
    this.layers = { heat: null, cells: null, mark: null, dim: 0, grid: false };
    this.hoverCb = null;
    this.root.addEventListener("mousemove", (e) => this._move(e));
    this.root.addEventListener("mouseleave", () => this.hoverCb && this.hoverCb(null, null));
  }

  cellAt(e) {
    const r = this.root.getBoundingClientRect();
    const x = Math.floor(((e.clientX - r.left) / r.width) * this.w);
    const y = Math.floor(((e.clientY - r.top) / r.height) * this.h);
    if (x < 0 || y < 0 || x >= this.w || y >= this.h) return null;
    return [x, y];
  }

  _move(e) {
    if (!this.hoverCb) return;
    const c = this.cellAt(e);
    if (c) this.hoverCb(c[0], c[1], e);
    else this.hoverCb(null, null, e);
  }

  onHover(cb) { this.hoverCb = cb; return this; }

  // map: H' x W' values (any grid), signed or not; drawn smooth, positive warm, negative cool.
  heat(map, opts = {}) { this.layers.heat = map ? { map, opts } : null; this.draw(); return this; }

  // colors: H x W x 3 (0..255) painted as translucent cells.
  cells(colors, alpha = 0.55) { this.layers.cells = colors ? { colors, alpha } : null; this.draw(); return this; }

  mark(x, y) { this.layers.mark = x === null || x === undefined ? null : [x, y]; this.draw(); return this; }

  showGrid(on) { this.layers.grid = on; this.draw(); return this; }

  draw() {
    const ctx = this.ctx, S = this.canvas.width;
    ctx.clearRect(0, 0, S, S);
    const { heat, cells, mark, grid } = this.layers;
    if (cells) {
      const { colors, alpha } = cells;
      const h = colors.length, w = colors[0].length;
      const off = document.createElement("canvas");
      off.width = w; off.height = h;
      const octx = off.getContext("2d");
      const im = octx.createImageData(w, h);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        const i = 4 * (y * w + x), c = colors[y][x];
        im.data[i] = c[0]; im.data[i + 1] = c[1]; im.data[i + 2] = c[2]; im.data[i + 3] = Math.round(255 * alpha);
      }
      octx.putImageData(im, 0, 0);
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(off, 0, 0, S, S);
    }
    if (heat) {
      const { map, opts } = heat;
      const h = map.length, w = map[0].length;
      const m = opts.max || mapExtent(map);
      const off = document.createElement("canvas");
      off.width = w; off.height = h;
      const octx = off.getContext("2d");
      const im = octx.createImageData(w, h);
      const pos = opts.color || POS, neg = opts.negColor || NEG;
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        const v = map[y][x] / m, i = 4 * (y * w + x);
        const c = v >= 0 ? pos : neg;
        im.data[i] = c[0]; im.data[i + 1] = c[1]; im.data[i + 2] = c[2];
        im.data[i + 3] = Math.round(235 * Math.min(1, Math.pow(Math.abs(v), opts.gamma || 0.8)));
      }
      octx.putImageData(im, 0, 0);
      // darken the photo a little so the heat reads on bright images
      ctx.fillStyle = "rgba(0,0,0,0.25)";
      ctx.fillRect(0, 0, S, S);
      ctx.imageSmoothingEnabled = !opts.blocky;
      ctx.drawImage(off, 0, 0, S, S);
    }
    if (grid) {
      ctx.strokeStyle = "rgba(255,255,255,0.35)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let x = 1; x < this.w; x++) { const p = Math.round((x * S) / this.w) + 0.5; ctx.moveTo(p, 0); ctx.lineTo(p, S); }
      for (let y = 1; y < this.h; y++) { const p = Math.round((y * S) / this.h) + 0.5; ctx.moveTo(0, p); ctx.lineTo(S, p); }
      ctx.stroke();
    }
    if (mark) {
      const cw = S / this.w, ch = S / this.h;
      ctx.lineWidth = 4;
      ctx.strokeStyle = "#fff";
      ctx.strokeRect(mark[0] * cw + 2, mark[1] * ch + 2, cw - 4, ch - 4);
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#111";
      ctx.strokeRect(mark[0] * cw + 2, mark[1] * ch + 2, cw - 4, ch - 4);
    }
  }
}
