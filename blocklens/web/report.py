"""The self-contained report: one HTML file with the page document, every picture (as ``data:`` URIs), the
stylesheet and the bundled front end inline. It opens from file:// with the network off; its Content Security
Policy forbids every fetch, so it cannot reach out even by accident."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..images import picture_data_uri
from .bundle import bundle, stylesheet
from .data import layer_sprites, page_data

CSP = ("default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")


def script_json(obj) -> str:
    """JSON that is safe inside a <script> element (no ``</script>``, no ``<!--``)."""
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace(
        "&", "\\u0026")


def inline_data(expl, store=None) -> dict:
    """The page document with every picture as a ``data:`` URI, encoded by :func:`~blocklens.images.picture_data_uri`
    (icons and grids JPEG 4:4:4, the photo WebP). With a ``store`` that holds a layer's sprite sheet
    (``blocklens precompute``), the sheet is inlined once instead of that layer's single icons, as the store's PNG:
    the page cuts its cells out on a canvas, so its pixels must be exact (and a lossy file would bleed across
    cells)."""
    def icon(key, ic):
        return picture_data_uri(ic.to_pil(), "icon") if ic is not None else None

    def grid(key, g):
        return picture_data_uri(g.image(), "grid") if g is not None else None

    def sheet(layer, rh, index):
        got = store.sprite_bytes(expl.fingerprint, layer, rh)
        return "data:image/png;base64," + base64.b64encode(got[0]).decode("ascii") if got else None

    sprites = layer_sprites(expl, store, sheet) if store is not None else None
    image = picture_data_uri(expl.crop.convert("RGB"), "photo") if expl.crop is not None else None
    return page_data(expl, icon, image, grid, sprites)


def page_html(data: dict, title: str, *, extra_head: str = "", after: str = "") -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{html.escape(title)}</title>
<style>{stylesheet()}</style>{extra_head}
</head><body class="blocklens-page">
<main id="blocklens" class="blocklens"><p>Loading the views… (this page needs JavaScript)</p></main>
<script type="application/json" id="blocklens-data">{script_json(data)}</script>
<script>{bundle("report.js")}
window.blocklens.mountReport();{after}</script>
</body></html>
"""


def title_for(expl) -> str:
    top = expl.predictions[0]
    return f"blocklens · {top['label']} ({100 * top['prob']:.0f}%) · {expl.model}"


def report_html(expl, title: str | None = None, store=None, examples: dict | None = None,
                examples_note: str | None = None) -> str:
    """The report as a string (see the module docstring); ``store``: read layer sprite sheets from it;
    ``examples``: icon key -> dataset examples (:func:`examples_data`), shown on hovering (or clicking) an icon;
    ``examples_note``: the line saying where they came from, or that no index was there."""
    data = inline_data(expl, store)
    if examples:
        data["examples"] = examples
    if examples_note:
        data["examples_note"] = examples_note
    return page_html(data, title or title_for(expl))


def write_page(path: str | Path, text: str) -> Path:
    """Write a page whole to a temporary name first, then rename it into place (no half-written page)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


class HtmlPage:
    """A result that is a self-contained page (its ``to_html()``): saved whole, shown in a notebook in an isolated
    iframe (the page's CSP keeps it offline) ``frame_height`` pixels high."""

    frame_height = 900

    def to_html(self) -> str:
        raise NotImplementedError

    def save_html(self, path) -> Path:
        return write_page(path, self.to_html())

    def _repr_html_(self) -> str:
        return (f'<iframe sandbox="allow-scripts" style="width:100%;height:{self.frame_height}px;border:0" '
                f'srcdoc="{html.escape(self.to_html(), quote=True)}"></iframe>')


def save_report(expl, path: str | Path, title: str | None = None, store=None, examples: dict | None = None,
                examples_note: str | None = None) -> Path:
    """Write the report whole (:func:`write_page`)."""
    return write_page(path, report_html(expl, title, store, examples, examples_note))


def atlas_html(atlas, title: str | None = None) -> str:
    """A self-contained page with the atlas (icons and example patches inline, no network)."""
    data = atlas.to_json(images=True)
    return page_html(data, title or f"blocklens · activation atlas · {atlas.layer} · {atlas.model}")


def concepts_html(data: dict, title: str) -> str:
    """A self-contained page with a class's concepts (``ClassConcepts.to_json()``: icons, patches, maps inline)."""
    return page_html(data, title)


def dictionary_html(data: dict, title: str) -> str:
    """A self-contained page with a concept dictionary (``ConceptDictionary.to_json()``: icons, patches inline)."""
    return page_html(data, title)
