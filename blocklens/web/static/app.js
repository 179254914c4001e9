// The app: choose a model, layers and an image (bundled or uploaded), ask the server for the explanation,
// mount the views at once, then follow the render job and fill in icons and grids as they land.
import { el } from "./util.js";
import { mountViews } from "./views.js";
import { linkIndexes } from "./indexes.js";
import { mountConcepts } from "./concepts.js";
import { mountAtoms } from "./atoms.js";

const $ = (id) => document.getElementById(id);
const state = { model: null, image: "dog", file: null, models: [], handle: null, poll: null, seq: 0, explained: false };

async function api(path, opts = {}) {
  const res = await fetch(path, opts);
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

function showError(msg) { $("error").textContent = msg || ""; }

function setStatus(text, fraction = null) {
  $("status-text").textContent = text;
  const bar = $("progress");
  bar.hidden = fraction === null;
  if (fraction !== null) bar.value = fraction;
}

async function layersFor(name) {
  let m = state.models.find((x) => x.name === name);
  const box = $("layers");
  if (m && !m.layers && m.installed) {
    box.replaceChildren(el("span", { text: "loading the model…" }));
    try { Object.assign(m, await api(`api/models/${encodeURIComponent(name)}`)); } catch (e) { showError(e.message); }
  }
  if (!m || !m.layers) { box.replaceChildren(el("span", { text: "this model is not installed" })); return; }
  box.replaceChildren(...m.layers.map((L) => el("label", {},
    el("input", { type: "checkbox", value: L.name, checked: m.default_layers.includes(L.name) }),
    `${L.name} ${L.shape.join("×")}`)));
}

function chosenLayers() {
  return [...$("layers").querySelectorAll("input:checked")].map((i) => i.value);
}

async function init() {
  try {
    state.models = await api("api/models");
    $("model").replaceChildren(...state.models.map((m) => el("option", { value: m.name, disabled: !m.installed }, m.name)));
    state.model = state.models[0].name;
    $("model").addEventListener("change", async (e) => { state.model = e.target.value; await layersFor(state.model); explain(); });
    await layersFor(state.model);
    const images = await api("api/images");
    $("thumbs").replaceChildren(...images.map((im) => el("img", { class: "thumb" + (im.name === state.image ? " on" : ""),
      src: im.url, alt: im.name, title: im.name, "data-image": im.name,
      onclick: (e) => { state.image = im.name; state.file = null; $("upload").value = "";
        for (const t of $("thumbs").children) t.classList.toggle("on", t === e.target); explain(); } })));
  } catch (e) { showError(`could not reach the server: ${e.message}`); return; }
  $("upload").addEventListener("change", () => { const f = $("upload").files[0]; if (f) { state.file = f; markUpload(); explain(); } });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over");
    const f = e.dataTransfer.files[0]; if (f) { state.file = f; markUpload(); explain(); } });
  $("go").addEventListener("click", explain);
  window.addEventListener("hashchange", showPage);
  showPage();
}

function markUpload() { for (const t of $("thumbs").children) t.classList.remove("on"); }

async function explain() {
  const seq = ++state.seq;
  clearTimeout(state.poll);
  showError("");
  $("go").disabled = true;
  setStatus("computing the analyses…", null);
  const q = new URLSearchParams({ model: state.model });
  const layers = chosenLayers();
  if (layers.length) q.set("layers", layers.join(","));
  if (!state.file) q.set("image", state.image);
  const started = performance.now();
  try {
    const data = await api(`api/explain?${q}`, { method: "POST", body: state.file || undefined,
      headers: state.file ? { "Content-Type": "application/octet-stream" } : {} });
    if (seq !== state.seq) return;
    state.handle = mountViews($("blocklens"), data);
    linkIndexes($("blocklens"), data);
    const report = $("report");
    report.href = `api/explanations/${data.id}/report.html`;
    report.hidden = false;
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    if (data.job) { setStatus(`analyses ready in ${secs} s; rendering icons…`, 0); follow(data.id, data.job, 0, seq); }
    else setStatus(`ready in ${secs} s (every icon from the store)`, null);
  } catch (e) {
    if (seq === state.seq) { showError(e.message); setStatus("", null); }
  } finally {
    if (seq === state.seq) $("go").disabled = false;
  }
}

async function follow(id, job, since, seq) {
  if (seq !== state.seq) return;
  let st;
  try { st = await api(`api/jobs/${job}?since=${since}`); } catch (e) { showError(`render job: ${e.message}`); return; }
  if (seq !== state.seq) return;
  if (st.ready.length) state.handle.setIcons(Object.fromEntries(st.ready.map((k) => [k, `api/icons/${k}.png`])));
  const eta = st.eta_s ? ` · about ${Math.ceil(st.eta_s)} s left` : "";
  const what = st.stage === "icons" ? `icons ${st.done}/${st.total}` : st.stage.startsWith("grid") ? `${st.stage}: step ${st.done}/${st.total}` : st.stage;
  if (st.state === "error") { showError(`rendering failed: ${st.error}`); setStatus("", null); return; }
  if (st.state === "done") {
    try {
      const data = await api(`api/explanations/${id}`);
      if (seq !== state.seq) return;
      state.handle.setIcons(data.icons);
      state.handle.setQuality(data);
      state.handle.setGrids(Object.fromEntries(data.layers.map((L) => [L.layer, L.grid])));
      setStatus("ready: every icon and grid rendered and cached", null);
    } catch (e) { showError(e.message); }
    return;
  }
  setStatus(`rendering ${what}${eta}`, st.fraction);
  state.poll = setTimeout(() => follow(id, job, st.ready_upto, seq), 700);
}

init();

// -- the class concepts page (#concepts): an index, a class (and an optional second one), a layer; the server
// computes the concepts in a background job (progress below the form) and the page shows them with mountConcepts.
const cc = { indexes: [], info: null, seq: 0, poll: null, started: false };

function showPage() {
  const page = { "#concepts": "concepts", "#dictionaries": "dictionaries" }[location.hash] || "explain";
  for (const name of ["concepts", "dictionaries"]) {
    document.body.classList.toggle(`page-${name}`, page === name);
    $(`${name}-page`).hidden = page !== name;
    $(`${name}-result`).hidden = page !== name;
  }
  for (const a of $("app-nav").querySelectorAll("a")) a.classList.toggle("on", a.dataset.page === page);
  if (page === "concepts" && !cc.started) { cc.started = true; conceptsInit(); }
  if (page === "dictionaries" && !dc.started) { dc.started = true; dictionariesInit(); }
  if (page === "explain" && !state.explained) { state.explained = true; explain(); }
}

function ccError(msg) { $("cc-error").textContent = msg || ""; }

function ccStatus(text, fraction = null) {
  $("cc-status-text").textContent = text;
  const bar = $("cc-progress");
  bar.hidden = fraction === null;
  if (fraction !== null) bar.value = fraction;
}

async function conceptsInit() {
  $("cc-go").addEventListener("click", conceptsGo);
  for (const id of ["cc-class", "cc-vs"]) $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") conceptsGo(); });
  $("cc-index").addEventListener("change", () => conceptsIndex($("cc-index").value));
  try { cc.indexes = await api("api/indexes"); } catch (e) { ccError(`could not list the indexes: ${e.message}`); return; }
  if (!cc.indexes.length) {
    $("cc-go").disabled = true;
    $("cc-note").textContent = "No activation index in the store yet: run `blocklens index FOLDER` (one subfolder per class gives the labels), then reload.";
    return;
  }
  $("cc-index").replaceChildren(...cc.indexes.map((i) => el("option", { value: i.key },
    `${i.folder} · ${i.model} · ${i.indexed} images (${i.key})`)));
  await conceptsIndex(cc.indexes[0].key);
}

async function conceptsIndex(key) {
  ccError("");
  $("cc-go").disabled = true;
  $("cc-note").textContent = "loading the index's model…";
  try {
    cc.info = await api(`api/indexes/${key}/classes`);
  } catch (e) { cc.info = null; ccError(e.message); $("cc-note").textContent = ""; return; }
  const info = cc.info;
  const first = info.folder_classes || [];
  const inFolder = new Set(first.map((c) => c.label));
  $("cc-labels").replaceChildren(
    ...first.map((c) => el("option", { value: c.label }, `${c.images} image${c.images === 1 ? "" : "s"} in the folder`)),
    ...info.labels.filter((l) => !inFolder.has(l)).map((l) => el("option", { value: l })));
  $("cc-layer").replaceChildren(...info.layers.map((l) => el("option", { value: l, selected: l === info.layers[info.layers.length - 1] }, l)));
  if (first.length && !$("cc-class").value) $("cc-class").value = first[0].label;
  $("cc-note").textContent = `${info.model}: ${info.images} images of ${info.folder}; labels from ${info.labels_from}` +
    (first.length ? ` (${first.map((c) => `${c.label} ${c.images}`).join(", ")})` : "") + ".";
  $("cc-go").disabled = false;
}

async function conceptsGo() {
  if (!cc.info) return;
  const seq = ++cc.seq;
  clearTimeout(cc.poll);
  ccError("");
  const q = new URLSearchParams({ index: cc.info.key, class: $("cc-class").value.trim(), layer: $("cc-layer").value });
  const vs = $("cc-vs").value.trim();
  if (vs) q.set("vs", vs);
  $("cc-go").disabled = true;
  ccStatus("starting…", null);
  try {
    const got = await api(`api/concepts?${q}`, { method: "POST" });
    if (seq !== cc.seq) return;
    if (got.job) conceptsFollow(got, seq);
    else await conceptsShow(got.id, seq, "ready (computed before)");
  } catch (e) {
    if (seq === cc.seq) { ccError(e.message); ccStatus("", null); $("cc-go").disabled = false; }
  }
}

async function conceptsFollow(got, seq) {
  if (seq !== cc.seq) return;
  let st;
  try { st = await api(`api/jobs/${got.job}`); } catch (e) { ccError(`concepts job: ${e.message}`); $("cc-go").disabled = false; return; }
  if (seq !== cc.seq) return;
  if (st.state === "error") { ccError(st.error); ccStatus("", null); $("cc-go").disabled = false; return; }
  if (st.state === "done") { await conceptsShow(got.id, seq, `ready in ${st.elapsed_s.toFixed(0)} s`); return; }
  const part = st.total ? ` ${st.done}/${st.total}${st.stage === "scan" || st.stage === "measure" ? " images" : ""}` : "";
  const eta = st.eta_s ? ` · about ${Math.ceil(st.eta_s)} s left` : "";
  ccStatus(`concepts of ${st.label}: ${st.stage}${part}${eta}`, st.fraction);
  cc.poll = setTimeout(() => conceptsFollow(got, seq), 700);
}

async function conceptsShow(id, seq, note) {
  try {
    const data = await api(`api/concepts/${id}`);
    if (seq !== cc.seq) return;
    mountConcepts($("concepts-result"), data);
    ccStatus(`${note}: ${data.concepts.length} concepts of ${data.label} at ${data.layer}`, null);
  } catch (e) { if (seq === cc.seq) { ccError(e.message); ccStatus("", null); } }
  finally { if (seq === cc.seq) $("cc-go").disabled = false; }
}

// -- the concept dictionaries page (#dictionaries): the dictionaries saved in the store (bl.concept_dictionary),
// one of them shown with mountAtoms, as in its report.
const dc = { started: false, seq: 0 };

async function dictionariesInit() {
  $("dict-pick").addEventListener("change", () => dictionaryShow($("dict-pick").value));
  let all;
  try { all = await api("api/dictionaries"); } catch (e) { $("dict-error").textContent = `could not list the dictionaries: ${e.message}`; return; }
  if (!all.length) {
    $("dict-note").textContent = "No concept dictionary in the store yet: make one with bl.concept_dictionary(model, folder, store=...), then reload.";
    return;
  }
  $("dict-pick").replaceChildren(...all.map((d) => el("option", { value: d.key },
    `${d.layer} · ${d.model} · ${d.method.toUpperCase()} ${d.atoms} atoms · ${d.images} images of ${d.folder} (${d.key})`)));
  await dictionaryShow(all[0].key);
}

async function dictionaryShow(key) {
  const seq = ++dc.seq;
  $("dict-error").textContent = "";
  $("dict-status-text").textContent = "loading the dictionary (its patches are cut from the folder's images)…";
  try {
    const data = await api(`api/dictionaries/${key}`);
    if (seq !== dc.seq) return;
    mountAtoms($("dictionaries-result"), data);
    $("dict-note").textContent = data.note || "";
    $("dict-status-text").textContent = "";
  } catch (e) { if (seq === dc.seq) { $("dict-error").textContent = e.message; $("dict-status-text").textContent = ""; } }
}
