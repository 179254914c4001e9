"""The reference pack: a read-only store layer beneath every user store, shipped with the package."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import blocklens as bl
from blocklens.iconcache import icon_key_for
from blocklens.optvis.targets import channel_target
from blocklens.recipes import DEFAULT_LAYERS, PRESETS, recipe_for
from blocklens.store import RECIPE_VERSION, CorruptIconWarning, IconStore, InvalidIconError
from blocklens.store.iconstore import bundled_pack
from blocklens.store.pack import PACK_DIR, pack_keys, pack_manifest

KEY_A, KEY_B = "a" * 64, "b" * 64


def _pixels(v: int) -> np.ndarray:
    return np.full((8, 8, 3), v, dtype=np.uint8)


@pytest.fixture()
def layered(tmp_path):
    lower = IconStore(tmp_path / "pack", beneath=False)
    lower.put(KEY_A, _pixels(10), {"layer": "x"})
    lower.put(KEY_B, _pixels(20), {"layer": "x"})
    pack = IconStore(tmp_path / "pack", beneath=False, read_only=True)
    pack.source = "pack"
    return IconStore(tmp_path / "user", beneath=pack), pack


def test_user_store_wins_and_the_pack_fills_in(layered):
    user, pack = layered
    assert user.get(KEY_A).source == "pack" and int(user.get(KEY_A).image[0, 0, 0]) == 10
    user.put(KEY_A, _pixels(99), {"layer": "x"})  # the user's own entry for the same key
    got = user.get(KEY_A)
    assert got.source == "store" and int(got.image[0, 0, 0]) == 99
    assert int(pack.get(KEY_A).image[0, 0, 0]) == 10  # the pack is untouched
    assert user.exists(KEY_B) and KEY_B in user and list(user.keys()) == [KEY_A]  # keys(): this store's own
    with pytest.raises(InvalidIconError, match="read-only"):
        pack.put(KEY_B, _pixels(1))


def test_verify_covers_the_pack_and_leaves_it_in_place(layered, tmp_path):
    user, pack = layered
    path = pack.path_for(KEY_B)
    path.write_bytes(path.read_bytes()[:40])  # truncated in the pack
    report = user.verify(beneath=True)
    assert report["ok"] == 0 and report["beneath"]["corrupt"] == [KEY_B] and report["beneath"]["ok"] == 1
    assert path.exists()  # read-only: reported, never moved
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert user.get(KEY_B) is None  # so it is rendered into the user's store
    assert any(issubclass(x.category, CorruptIconWarning) for x in w)
    assert user.verify() == {"ok": 0, "corrupt": []}  # without beneath=True: this store only


def test_pack_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("BLOCKLENS_PACK", "0")
    assert bundled_pack() is None and pack_manifest() is None
    assert IconStore("memory://no-pack").beneath is None


def test_the_shipped_pack_is_current_and_complete(lite0, with_pack):
    """The pack matches the embedded model, the default preset and the current algorithm version, and holds every
    channel of the default layers: a change to any of them must rebuild it (python -m blocklens.store.packbuild)."""
    manifest = pack_manifest(PACK_DIR)
    assert manifest is not None, f"no reference pack in {PACK_DIR}"
    recipe = recipe_for(**PRESETS["default"]["icons"])
    assert manifest["fingerprint"] == lite0.fingerprint and manifest["recipe"] == recipe
    assert manifest["recipe_version"] == RECIPE_VERSION and manifest["preset"] == "default"
    want = {icon_key_for(lite0, channel_target(lite0, layer, c), recipe)
            for layer in DEFAULT_LAYERS["efficientnet_lite0"] for c in range(lite0.layer(layer).channels)}
    have = set(pack_keys(PACK_DIR))
    assert want == have and manifest["icons"] == len(have)
    pack = IconStore(PACK_DIR, beneath=False, read_only=True)
    some = sorted(have)[:: max(1, len(have) // 8)]
    for key in some:  # verified entries, with their recipe and a real optimization behind them
        icon = pack.get(key)
        assert icon is not None and icon.image.shape == (128, 128, 3)
        assert icon.meta["recipe"] == recipe and icon.meta["zero_grad_steps"] <= 0.1 * recipe["steps"]


def test_explain_on_an_empty_store_shows_the_packs_channel_icons(lite0, tmp_path, with_pack):
    """On a CPU (the quick preset) with an empty user store, every channel icon the report shows is the pack's;
    only the group directions are rendered, at the quick preset, and the report says so."""
    from blocklens.web.report import report_html

    if pack_manifest() is None:
        pytest.fail(f"no reference pack in {PACK_DIR}")
    e = bl.explain(bl.bundled_image("dog"), model=lite0, store=tmp_path / "empty", progress=False, grids=False,
                   n_groups=2, group_counts=(2,))
    assert e.preset == "quick"
    pack = set(pack_keys())
    shown = [k for idx in e.icon_index.values() for k in idx["channels"].values()]
    assert shown and set(shown) <= pack
    assert all(e.icons[k].source == "pack" for k in shown)
    assert e.sources["channels"] == {"pack default": len(set(shown))}
    assert e.sources["directions"] == {"rendered quick": 4}
    assert "from the reference pack (default preset)" in e.note and "rendered now (quick preset)" in e.note
    assert not any(p.name for p in (tmp_path / "empty").rglob("*.png") if p.stem in pack)  # nothing copied
    html = report_html(e)
    doc = json.loads(html.split('<script type="application/json" id="blocklens-data">', 1)[1].split("</script>", 1)[0])
    for layer in doc["layers"]:
        assert set(layer["channel_icons"].values()) <= pack
