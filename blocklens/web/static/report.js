// The report and notebook entry: the page document is inline in <script type="application/json">.
import { mountViews } from "./views.js";

export function mountReport() {
  const data = JSON.parse(document.getElementById("blocklens-data").textContent);
  mountViews(document.getElementById("blocklens"), data);
}
