// Every view of one explanation, mounted into one element. The page document (see blocklens/web/data.py) holds
// all numbers, so every hover is answered here without a round trip.
import { el, decodeF32, rgb, POS } from "./util.js";
import { refreshIcons, loadSprites, setIconQuality } from "./icons.js";
import { classesView } from "./classes.js";
import { dictionaryView } from "./dictionary.js";
import { gridsView } from "./grids.js";
import { spatialView } from "./spatial.js";
import { groupsView } from "./groups.js";
import { explainAtomsView } from "./atomsview.js";

export function mountViews(root, data) {
  const ctx = { data, icons: { ...data.icons }, acts: data.layers.map((L) => decodeF32(L.activations)) };
  const header = el("section", { id: "summary", class: "view summary" },
    el("img", { class: "photo", src: data.image, alt: "the model's view of the image", width: 160, height: 160 }),
    el("div", { class: "preds" },
      el("div", { class: "model-name", text: `${data.model} · layers ${data.layers.map((L) => L.layer).join(", ")}` }),
      ...data.predictions.map((p) => el("div", { class: "pred", "data-class": p.index },
        el("span", { class: "pred-label", text: p.label }),
        el("span", { class: "bar" }, el("span", { class: "bar-fill", style: `width:${Math.max(1, 100 * p.prob)}%;background:${rgb(POS)}` })),
        el("span", { class: "chan-val", text: `${(100 * p.prob).toFixed(1)}%` })))),
    el("nav", { class: "jump" }, ...[["classes", "classes"], ["dictionary", "dictionary"], ["grids", "grids"], ["spatial", "spatial"], ["groups", "groups"], ...(data.atoms ? [["atoms", "atoms"]] : [])]
      .map(([id, t]) => el("a", { href: `#${id}`, text: t }))));
  const quality = el("div", { class: "quality-box" });
  const showQuality = (d) => {
    setIconQuality(d.icon_quality);
    const lines = (d.layers || []).filter((L) => L.quality_line).map((L) =>
      el("p", { class: "quality-line", "data-layer": L.layer, text: `${L.layer} icons: ${L.quality_line}` }));
    const notes = [[d.note, "recipe"], [d.examples_note, "examples-note"]].filter(([t]) => t)
      .map(([t, cls]) => el("p", { class: `quality-line ${cls}`, text: t }));
    quality.replaceChildren(...notes, ...lines);
  };
  showQuality(data);
  header.append(quality);
  const grids = gridsView(ctx);
  root.replaceChildren(header, classesView(ctx), dictionaryView(ctx), grids.root, spatialView(ctx), groupsView(ctx),
    ...(data.atoms ? [explainAtomsView(ctx)] : []));
  root.dataset.ready = "1";
  loadSprites(data.sprites, (icons) => {
    Object.assign(ctx.icons, icons);
    refreshIcons(root, ctx.icons);
    root.dataset.sprites = String(Number(root.dataset.sprites || 0) + 1);
  });
  return {
    ctx,
    // new icon URLs (key -> URL) arrived: fill the placeholders
    setIcons(icons) {
      for (const [k, v] of Object.entries(icons)) if (v) ctx.icons[k] = v;
      return refreshIcons(root, ctx.icons);
    },
    // a layer's grid arrived: {layer: grid}
    setGrids(byLayer) {
      for (const L of data.layers) if (byLayer[L.layer]) L.grid = byLayer[L.layer];
      grids.rebuild();
    },
    // the explanation's quality figures arrived (after its icons): tooltips, dead tiles, the summary lines
    setQuality(d) { showQuality(d); return refreshIcons(root, ctx.icons); },
    pending() { return root.querySelectorAll("img.icon.pending").length; },
  };
}

