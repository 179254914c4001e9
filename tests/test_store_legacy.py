"""A store written by an earlier version (tests/data/legacy_store, see make_legacy_store.py) reads as it did."""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest

from blocklens.store import IconStore

from conftest import assert_close

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "legacy_store.json").read_text())
KEYS = sorted(i["key"] for i in EXPECTED["icons"])


@pytest.fixture(params=["local", "memory"])
def legacy(request, tmp_path) -> IconStore:
    """A copy of the legacy store: a local folder (its temp file two hours old) or a memory:// store holding the
    same bytes under the same names."""
    src = DATA / "legacy_store"
    if request.param == "local":
        shutil.copytree(src, tmp_path / "legacy")
        old = time.time() - 7200
        os.utime(tmp_path / "legacy" / EXPECTED["temp"], (old, old))
        return IconStore(tmp_path / "legacy")
    url = request.getfixturevalue("memory_url")
    fs = fsspec.filesystem("memory")
    for p in src.rglob("*"):
        if p.is_file():
            fs.pipe_file(f"{fs._strip_protocol(url)}/{p.relative_to(src).as_posix()}", p.read_bytes())
    return IconStore(url)


def test_every_entry_reads_back_exactly(legacy):
    assert list(legacy.keys()) == KEYS and len(legacy) == len(KEYS) == 4
    for want in EXPECTED["icons"]:
        assert legacy.exists(want["key"])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing is corrupt
            icon = legacy.get(want["key"])
        pixels = np.asarray(want["pixels"], dtype=np.uint8)
        assert icon is not None and icon.key == want["key"]
        assert icon.image.dtype == np.uint8 and icon.image.shape == pixels.shape
        np.testing.assert_array_equal(icon.image, pixels)
        assert icon.meta == want["meta"] and icon.meta["key"] == want["key"] and "created" in icon.meta
        assert want["key"] in legacy
    assert {legacy.get(k).image.shape for k in KEYS} == {(8, 8, 3), (12, 12, 3), (8, 8, 4)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert legacy.verify() == {"ok": 4, "corrupt": []}
    assert list(legacy.keys()) == KEYS  # nothing moved aside


def test_sprite_is_found_with_its_index(legacy):
    from blocklens.store import RECIPE_VERSION, recipe_hash

    fp, layer, recipe = EXPECTED["fingerprint"], EXPECTED["layer"], EXPECTED["recipe"]
    want = EXPECTED["sprite_index"]
    old = EXPECTED["recipe_hash"]  # the sheet was written at RECIPE_VERSION 2
    assert recipe_hash(recipe, version=2) == old
    assert legacy.sprite_index(fp, layer, old) == want
    assert legacy.sprites() == [want] and legacy.sprites(fingerprint=fp, layer=layer) == [want]
    img, index = legacy.sprite(fp, layer, old)
    assert index == want and index["recipe_hash"] == old
    np.testing.assert_array_equal(np.asarray(img), np.asarray(EXPECTED["sheet"], dtype=np.uint8))
    data, same = legacy.sprite_bytes(fp, layer, old)
    assert same == want and data.startswith(b"\x89PNG")
    if RECIPE_VERSION != 2:  # the recipe at the current algorithm's version names another sheet: never served stale
        assert legacy.sprite_index(fp, layer, recipe) is None


def test_info_and_clean_temp(legacy):
    info = legacy.info()
    assert info["entries"] == 4 and info["temp_files"] == 1 and info["corrupt_files"] == 0
    assert [s["layer"] for s in info["sprites"]] == [EXPECTED["layer"]]
    temp = EXPECTED["temp"]
    if legacy.is_local:
        assert (legacy.root / temp).is_file()
        assert legacy.clean_temp() == 1  # two hours old: past the default max age
        assert not (legacy.root / temp).exists()
    else:  # memory:// files are as old as the copy: only max_age_s=0 removes the temp file
        assert legacy.clean_temp(max_age_s=3600) == 0
        assert legacy.clean_temp(max_age_s=0) == 1
    assert legacy.info()["temp_files"] == 0 and legacy.clean_temp(max_age_s=0) == 0
    assert list(legacy.keys()) == KEYS and legacy.verify() == {"ok": 4, "corrupt": []}
    assert legacy.sprite(EXPECTED["fingerprint"], EXPECTED["layer"], EXPECTED["recipe_hash"]) is not None


# -- an activation index written by the code before the package was laid out in floors (make_legacy_index.py) --
LEGACY_INDEX = "266fb1d0fb101830"


@pytest.fixture
def legacy_index_store(tmp_path) -> IconStore:
    shutil.copytree(DATA / "legacy_index", tmp_path / "legacy_index")
    return IconStore(tmp_path / "legacy_index")


def test_a_legacy_index_loads_and_the_same_build_finds_it(legacy_index_store, monkeypatch):
    """The index reads by its key and in the listing; building the same options over the same photographs finds it
    (the key scheme is unchanged) and computes nothing."""
    import blocklens as bl
    import blocklens.dataset.index as index_mod
    from blocklens.images import BUNDLED_DIR

    index = bl.load_index(LEGACY_INDEX, store=legacy_index_store)
    assert index.count == 6 and index.layers == ["blocks.11"]
    L = index.layer("blocks.11")
    assert L.top_img.shape == (192, 3) and L.samples.shape == (6, 192) and L.sample_classes.shape == (6, 2)
    assert [i.key for i in index_mod.list_indexes(legacy_index_store)] == [LEGACY_INDEX]
    monkeypatch.setattr(index_mod, "compute_chunk", lambda *a, **k: pytest.fail("a finished index was recomputed"))
    again = bl.build_index(BUNDLED_DIR, "efficientnet_lite0", ["blocks.11"], store=legacy_index_store, k=3, samples=1,
                           seed=0, classes=2, chunk=4, progress=False)
    assert again.key == LEGACY_INDEX


def test_a_fresh_index_has_the_legacy_numbers(legacy_index_store, tmp_path):
    """The same index built now, in an empty store, holds the numbers the earlier code wrote."""
    import blocklens as bl
    from blocklens.images import BUNDLED_DIR

    old = bl.load_index(LEGACY_INDEX, store=legacy_index_store).layer("blocks.11")
    new = bl.build_index(BUNDLED_DIR, "efficientnet_lite0", ["blocks.11"], store=tmp_path / "fresh", k=3,
                         samples=1, seed=0, classes=2, chunk=4, progress=False)
    assert new.key == LEGACY_INDEX
    fresh = new.layer("blocks.11")
    assert sorted(fresh.arrays) == sorted(old.arrays)
    for name, a in old.arrays.items():
        if a.dtype.kind in "iub":
            np.testing.assert_array_equal(fresh.arrays[name], a, err_msg=name)
        else:
            # float kernels of another CPU: 1e-5 of the array's scale (its values reach 6), not of each value
            assert_close(fresh.arrays[name], a, rtol=1e-4, atol=1e-5, err_msg=name)
