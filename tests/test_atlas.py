"""Dataset examples and the activation atlas, over a small folder (the bundled photos and mirrored copies)."""
import json
import sys

import numpy as np
import pytest

import blocklens as bl
from blocklens.dataset.atlas import whitening
from blocklens.errors import BlocklensError
from test_index import make_folder
from conftest import assert_close

pytest.importorskip("umap")

TINY = dict(size=32, steps=8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("photos"), copies=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return bl.IconStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def index(folder, lite0, store):
    return bl.build_index(folder, lite0, ["blocks.11"], store=store, k=4, samples=12, classes=3, progress=False)


@pytest.fixture(scope="module")
def atlas(index, lite0, store):
    return bl.activation_atlas(lite0, "blocks.11", index, grid=6, min_points=3, store=store, progress=False, **TINY)


def test_dataset_examples_are_the_peak_patches(index, lite0, folder):
    ex = bl.dataset_examples(lite0, "blocks.11", 7, index)
    L = index.layer("blocks.11")
    assert [e.value for e in ex.top] == pytest.approx(L.top_val[7].tolist())
    assert [e.value for e in ex.top] == sorted((e.value for e in ex.top), reverse=True)
    rf = index.manifest["layer_info"]["blocks.11"]["receptive_field"]["size"]
    for e in ex.top:
        left, top, right, bottom = e.box
        assert right - left == bottom - top == rf == e.patch.shape[0]
        cy, cx = (e.y + 0.5) * 32, (e.x + 0.5) * 32  # the peak's centre in input pixels (7x7 grid at 224 px)
        assert left <= cx <= right and top <= cy <= bottom
        _, crop = lite0.prepare(folder / e.path)
        np.testing.assert_array_equal(e.patch, np.asarray(crop)[top:bottom, left:right])
        # the value is the unit's activation at that position
        x, _ = lite0.prepare(folder / e.path)
        a = lite0.activations(x, "blocks.11")["blocks.11"][0, 7]
        assert float(a[e.y, e.x]) == pytest.approx(e.value, rel=1e-4, abs=1e-4)
    assert ex.signed and len(ex.bottom) == 4 and ex.bottom[0].value == pytest.approx(float(L.bot_val[7, 0]))
    j = ex.to_json(size=32)
    assert j["top"][0]["src"].startswith("data:image/webp;base64,") and len(j["bottom"]) == 4  # photo patches: WebP
    with pytest.raises(BlocklensError, match="out of range.*192 channels"):
        bl.dataset_examples(lite0, "blocks.11", 192, index)
    with pytest.raises(BlocklensError, match="indexed layer"):
        bl.dataset_examples(lite0, "blocks.7", 0, index)


def test_atlas_cells_bin_the_layout_and_carry_their_class_evidence(atlas, index, lite0):
    L = index.layer("blocks.11")
    n = len(L.samples)
    assert atlas.points == n == 12 * 12
    assert atlas.layout.shape == (n, 2) and atlas.layout.min() >= 0 and atlas.layout.max() <= 1
    members = [s for c in atlas.cells for s in c.samples]
    assert len(members) == len(set(members)) and all(c.count >= 3 for c in atlas.cells)
    W = whitening(L.samples.astype(np.float64), 0.01)
    for c in atlas.cells:
        for s in c.samples:  # each sample's cell is where its layout point falls
            col = min(int(atlas.layout[s, 0] * 6), 5)
            row = min(int((1 - atlas.layout[s, 1]) * 6), 5)
            assert (row, col) == (c.row, c.col)
        assert_close(c.mean, L.samples[c.samples].mean(0))  # float64 mean vs float32 mean
        d = W @ L.samples[c.samples].astype(np.float64).mean(0)
        np.testing.assert_allclose(c.direction, d / np.linalg.norm(d), rtol=1e-4, atol=1e-5)
    # class evidence, recomputed by hand for the largest cell
    big = max(atlas.cells, key=lambda c: c.count)
    ev = {}
    for s in big.samples:
        for cls, a in zip(L.sample_classes[s], L.sample_attribution[s]):
            ev[int(cls)] = ev.get(int(cls), 0.0) + float(a)
    best = max(ev, key=ev.get)
    assert big.classes[0][0] == best and big.classes[0][1] == lite0.labels[best]
    assert big.classes[0][2] == pytest.approx(ev[best] / big.count)


def test_atlas_icons_come_through_the_store(atlas, index, lite0, store, monkeypatch):
    assert all(c.icon is not None and store.exists(c.key) for c in atlas.cells)
    assert len({c.key for c in atlas.cells}) == len(atlas.cells)
    import blocklens.iconcache as iconcache

    def no_render(*a, **k):
        raise AssertionError("rendered although the store holds every icon")

    monkeypatch.setattr(iconcache, "render", no_render)
    again = bl.activation_atlas(lite0, "blocks.11", index, grid=6, min_points=3, store=store, progress=False, **TINY)
    assert [c.key for c in again.cells] == [c.key for c in atlas.cells]  # UMAP with a fixed random_state
    assert [(c.row, c.col, c.samples) for c in again.cells] == [(c.row, c.col, c.samples) for c in atlas.cells]
    np.testing.assert_array_equal(again.cells[0].icon.image, atlas.cells[0].icon.image)


def test_atlas_json_html_and_png(atlas, tmp_path):
    j = atlas.to_json()
    assert j["kind"] == "atlas" and len(j["cells"]) == len(atlas.cells)
    c0 = j["cells"][0]
    assert c0["icon"].startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))  # 32 px: the smaller
    assert c0["examples"][0]["src"].startswith("data:image/webp;base64,") and len(c0["examples"]) == min(6, c0["count"])
    assert c0["classes"] and set(c0["classes"][0]) == {"index", "label", "evidence"}
    json.dumps(j)
    html = atlas.save_html(tmp_path / "a.html").read_text()
    assert "Content-Security-Policy" in html and "mountAtlas" in html and "fetch(" not in html
    img = atlas.to_pil()
    assert img.size == (6 * 32, 6 * 32)
    assert atlas._repr_html_().startswith('<iframe sandbox="allow-scripts"') and "srcdoc=" in atlas._repr_html_()


def test_atlas_errors_name_the_fix(index, lite0, monkeypatch, folder, store):
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(BlocklensError, match="pip install umap-learn"):
        bl.activation_atlas(lite0, "blocks.11", index, icons=False)
    monkeypatch.undo()
    none = bl.build_index(folder, lite0, ["blocks.11"], store=store, samples=0, classes=0, progress=False)
    with pytest.raises(BlocklensError, match="samples"):
        bl.activation_atlas(lite0, "blocks.11", none, icons=False)


def test_cli_atlas_and_vis_examples(folder, tmp_path, capsys):
    from blocklens.cli import main

    store = tmp_path / "store"
    rc = main(["atlas", str(folder), "--layer", "blocks.11", "--samples", "12", "--classes", "2", "--grid", "5",
               "--size", "32", "--steps", "4", "--store", str(store), "--out", str(tmp_path / "a.html"),
               "--png", str(tmp_path / "a.png"), "--json", "--no-progress"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    assert got["layer"] == "blocks.11" and got["cells"] and (tmp_path / "a.html").exists() and (tmp_path / "a.png").exists()
    rc = main(["vis", "blocks.11:3", "--size", "32", "--steps", "4", "--store", str(store), "--out", str(tmp_path / "v"),
               "--examples", str(folder), "--json", "--no-progress"])
    assert rc == 0
    row = json.loads(capsys.readouterr().out)["icons"][0]
    assert (tmp_path / "v" / "blocks.11-3.examples.png").exists() and len(row["examples"]["top"]) == 8
    assert main(["atlas", "--layer", "blocks.11", "--no-progress"]) == 2
    assert "FOLDER, or --bundled" in capsys.readouterr().err


def test_a_file_changed_since_indexing_is_refused(tmp_path, lite0):
    from PIL import Image

    folder = make_folder(tmp_path / "p", copies=0)
    idx = bl.build_index(folder, lite0, ["blocks.11"], store=tmp_path / "s", k=2, classes=0, progress=False)
    L = idx.layer("blocks.11")
    victim = idx.images[int(L.top_img[0, 0])]
    Image.new("RGB", (300, 300), (0, 128, 255)).save(folder / victim)
    with pytest.raises(BlocklensError, match="changed since it was indexed"):
        bl.dataset_examples(lite0, "blocks.11", 0, idx)


def test_cli_explain_examples_puts_them_in_the_report(tiny_explanation, folder, tmp_path, capsys, monkeypatch):
    """explain --examples FOLDER: the report's page document maps each channel icon to its dataset examples."""
    import re
    import shutil

    from blocklens.cli import main
    from conftest import TINY_GRID, TINY_ICONS

    from blocklens import recipes

    monkeypatch.setitem(recipes.PRESETS, "quick", {"icons": TINY_ICONS, "grid": TINY_GRID,
                                                   "group_counts": recipes.PRESETS["default"]["group_counts"]})
    expl, store = tiny_explanation
    mine = tmp_path / "store"
    shutil.copytree(store, mine)  # a copy: the app tests expect no index in the session's store
    out = tmp_path / "dog.html"
    assert main(["explain", "dog", "--store", str(mine), "--out", str(out), "--quiet", "--examples", str(folder)]) == 0

    def page(path):
        m = re.search(r'<script type="application/json" id="blocklens-data">(.*?)</script>', path.read_text(), re.S)
        return json.loads(m.group(1))

    data = page(out)
    shown = {k for lr in data["layers"] for k in lr["channel_icons"].values()}
    assert set(data["examples"]) == shown
    one = next(iter(data["examples"].values()))
    assert len(one["top"]) == 6 and one["top"][0]["src"].startswith("data:image/webp")
    assert data["examples_note"].startswith("dataset examples: index ")

    # without --examples: the store's index of this model is used by default, and the report says which
    again = tmp_path / "again.html"
    capsys.readouterr()
    assert main(["explain", "dog", "--store", str(mine), "--out", str(again), "--quiet"]) == 0
    d2 = page(again)
    assert set(d2["examples"]) == shown and d2["examples_note"] == data["examples_note"]
    assert "dataset examples: index" in capsys.readouterr().out
    # --no-examples: none; a store with no index: none, and the report says how to get them
    assert main(["explain", "dog", "--store", str(mine), "--out", str(again), "--quiet", "--no-examples"]) == 0
    assert "examples" not in page(again) and "examples_note" not in page(again)
    assert main(["explain", "dog", "--store", str(store), "--out", str(again), "--quiet"]) == 0
    d3 = page(again)
    assert "examples" not in d3 and "blocklens index FOLDER" in d3["examples_note"]
