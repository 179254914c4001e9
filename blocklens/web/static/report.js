// The report and notebook entry: the page document is inline in <script type="application/json">.
import { mountViews } from "./views.js";
import { attachExamples } from "./examples.js";
import { mountAtlas } from "./atlas.js";
import { mountConcepts } from "./concepts.js";
import { mountAtoms } from "./atoms.js";

export function mountReport() {
  const data = JSON.parse(document.getElementById("blocklens-data").textContent);
  const root = document.getElementById("blocklens");
  if (data.kind === "atlas") { mountAtlas(root, data); return; }
  if (data.kind === "concepts") { mountConcepts(root, data); return; }
  if (data.kind === "dictionary") { mountAtoms(root, data); return; }
  mountViews(root, data);
  if (data.examples) attachExamples(root, data.examples);
}
