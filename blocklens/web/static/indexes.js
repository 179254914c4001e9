// The app's link to activation indexes (blocklens index) in its store: an icon's dataset examples on hover,
// and an activation atlas of any indexed layer, both asked of the server when first needed.
import { el } from "./util.js";
import { attachExamples } from "./examples.js";
import { atlasView } from "./atlas.js";

async function getJSON(path) {
  const res = await fetch(path);
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

export async function linkIndexes(root, data) {
  let all = [];
  try { all = await getJSON("api/indexes"); } catch { return null; }
  const mine = all.filter((i) => i.fingerprint === data.fingerprint);
  const old = root.querySelector("#atlases");
  if (!mine.length) {  // say so: natural exemplars beside icons are read better than icons alone
    const section = el("section", { id: "atlases", class: "view" },
      el("h2", { text: "Over a folder: dataset examples and atlases" }),
      el("p", { class: "lede examples-note", text: "No activation index of this model in the store: `blocklens index FOLDER` (then reload) shows each unit's top dataset patches beside its icon, and activation atlases here." }));
    if (old) old.remove();
    root.append(section);
    return section;
  }
  const units = {};  // icon key -> [index key, layer, unit]
  for (const L of data.layers) {
    const idx = mine.find((i) => i.layers.includes(L.layer));
    if (!idx) continue;
    for (const [c, key] of Object.entries(L.channel_icons || {})) units[key] = [idx.key, L.layer, Number(c)];
  }
  attachExamples(root, {}, {
    has: (key) => key in units,
    get: (key) => { const [k, layer, unit] = units[key]; return getJSON(`api/indexes/${k}/examples?layer=${encodeURIComponent(layer)}&unit=${unit}`); },
  });
  const holder = el("div", { class: "atlas-slot" });
  const status = el("span", { class: "lede" });
  const buttons = mine.flatMap((i) => i.layers.map((layer) => el("button", { type: "button", "data-atlas": `${i.key}:${layer}`,
    text: `atlas of ${layer}`, title: `${i.indexed} images of ${i.folder}`,
    onclick: async () => {
      status.textContent = `building the atlas of ${layer} (UMAP, then its icons: the first time takes a while)…`;
      try { holder.replaceChildren(atlasView(await getJSON(`api/indexes/${i.key}/atlas?layer=${encodeURIComponent(layer)}`))); status.textContent = ""; }
      catch (e) { status.textContent = `atlas failed: ${e.message}`; }
    } })));
  const section = el("section", { id: "atlases", class: "view" },
    el("h2", { text: "Over a folder: activation atlases" }),
    el("p", { class: "lede", text: `Indexes in the store for this model: ${mine.map((i) => `${i.key} (${i.indexed} images of ${i.folder})`).join("; ")}. Hover an icon above to see its unit's dataset examples.` }),
    el("div", { class: "atlas-bar" }, ...buttons, status), holder);
  if (old) old.remove();
  root.append(section);
  return section;
}
