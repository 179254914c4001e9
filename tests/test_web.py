"""The page document, the bundled front end, the self-contained report and the notebook display (no browser:
the browser tests in test_browser.py drive the same pages in chromium)."""
import base64
import html
import json
import re

import numpy as np
import pytest

from blocklens.errors import BlocklensError
from blocklens.web import bundle as bundle_mod
from blocklens.web.data import page_data
from blocklens.web.notebook import notebook_html
from blocklens.web.report import report_html, save_report, script_json


def test_page_document_holds_every_hover_answer(tiny_explanation):
    e, _ = tiny_explanation
    doc = json.loads(json.dumps(page_data(e, lambda k, i: f"icons/{k}.png" if i else None, "photo.png")))
    assert [L["layer"] for L in doc["layers"]] == ["blocks.7", "blocks.11"]
    L7 = doc["layers"][0]
    # activations decode to the layer's values (channel hover heat maps come from them)
    act = np.frombuffer(base64.b64decode(L7["activations"]["b64"]), "<f4").reshape(L7["activations"]["shape"])
    assert act.shape == (80, 14, 14)
    assert np.allclose(act, e.layers[0].activations, atol=1e-6)
    # any pair of the explained classes: its top channels on both sides have icons
    rows = {int(c): np.array(v) for c, v in L7["attribution"].items()}
    for a in rows:
        for b in rows:
            if a != b:
                for c in np.argsort(-(rows[a] - rows[b]))[:8]:
                    assert str(c) in L7["channel_icons"]
    # the dictionary at every position has icons for its channels
    for row in L7["dictionary"]["channels"]:
        for cell in row:
            assert all(str(c) in L7["channel_icons"] for c in cell)
    # every group count on the slider has its groups, icons and flows
    counts = L7["groups"]["counts"]
    assert counts == [3, 4, 5, 6]  # the quick preset's slider (the preset a CPU gets)
    for k in counts:
        opt = L7["groups"]["options"][str(k)]
        assert len(opt["icons"]) == k and np.array(opt["spatial"]).shape == (k, 14, 14)
        assert np.array(doc["flows"][0]["groups"][str(k)]).shape == (k, k)
    assert np.array(doc["flows"][0]["spatial"]).shape == (7, 7, 14, 14)
    # every icon key used is in the icon table, all rendered
    assert all(doc["icons"][k] for k in L7["channel_icons"].values())
    assert L7["grid"]["magnitude"] is not None and L7["grid"]["url"]


def test_report_is_self_contained(tiny_explanation, tmp_path):
    e, _ = tiny_explanation
    text = report_html(e)
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    # nothing fetched: no src/href to a network or file URL; pictures are data: URIs
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)
    assert "api/icons" not in text
    data = json.loads(re.search(r'<script type="application/json" id="blocklens-data">(.*?)</script>', text, re.S)[1])
    assert all(v.startswith("data:image/") for v in data["icons"].values())
    assert data["image"].startswith("data:image/webp")  # the photo
    path = save_report(e, tmp_path / "r" / "report.html")
    assert path.read_text() == text and not list(path.parent.glob(".*tmp"))


def test_script_json_cannot_close_the_script():
    s = script_json({"label": "</script><script>alert(1)</script><!--"})
    assert "</script" not in s and "<!--" not in s
    assert json.loads(s) == {"label": "</script><script>alert(1)</script><!--"}


def test_notebook_display_is_an_isolated_frame(tiny_explanation):
    e, _ = tiny_explanation
    out = e._repr_html_()
    assert out.startswith("<iframe") and 'sandbox="allow-scripts"' in out
    inner = html.unescape(re.search(r'srcdoc="(.*?)"></iframe>', out, re.S)[1])
    assert inner.startswith("<!doctype html>") and "blocklens-data" in inner
    assert notebook_html(e) != notebook_html(e)  # each display has its own frame id


def test_bundle_follows_the_module_convention(tmp_path, monkeypatch):
    js = bundle_mod.bundle("report.js")
    assert not re.search(r"^\s*(import|export) ", js, re.M)
    assert js.index("// ---- util.js") < js.index("// ---- views.js") < js.index("// ---- report.js")
    # the checks: a clash of top-level names and an unsupported import form are errors, not silent bundles
    for name in ("util.js", "overlay.js"):
        (tmp_path / name).write_text((bundle_mod.STATIC / name).read_text())
    (tmp_path / "a.js").write_text('import { el } from "./util.js";\nexport function el2() {}\nfunction fmt() {}\n')
    (tmp_path / "b.js").write_text('import * as u from "./util.js";\n')
    monkeypatch.setattr(bundle_mod, "STATIC", tmp_path)
    bundle_mod.bundle.cache_clear()
    try:
        with pytest.raises(BlocklensError, match="'fmt' is defined in both"):
            bundle_mod.bundle("a.js")
        with pytest.raises(BlocklensError, match="imports must read"):
            bundle_mod.bundle("b.js")
    finally:
        bundle_mod.bundle.cache_clear()
