"""Icons come from the store when present and are rendered, in batches, only where missing."""
import json

import numpy as np
import pytest

import blocklens as bl
import blocklens.iconcache as icons_mod
from blocklens.cli import main
from blocklens.store import IconStore

FAST = dict(size=48, steps=8)


@pytest.fixture
def counting_render(monkeypatch):
    calls = []
    real = icons_mod.render

    def spy(model, targets, **kw):
        calls.append([t.spec for t in targets])
        return real(model, targets, **kw)

    monkeypatch.setattr(icons_mod, "render", spy)
    return calls


def test_icons_render_only_what_is_missing(lite0, tmp_path, counting_render):
    store = IconStore(tmp_path)
    first = bl.icons(lite0, "blocks.3", [1, 2], store=store, progress=False, **FAST)
    assert counting_render == [["blocks.3:1", "blocks.3:2"]]
    again = bl.icons(lite0, "blocks.3", [2, 1, 3], store=store, batch=2, progress=False, **FAST)
    assert counting_render[1:] == [["blocks.3:3"]]
    assert np.array_equal(again[0].image, first[1].image) and np.array_equal(again[1].image, first[0].image)
    assert again[0].meta["target"] == "blocks.3:2" and "created" in again[0].meta
    assert len(store) == 3


def test_recipe_and_weights_are_in_the_key(lite0, tmp_path, counting_render):
    store = IconStore(tmp_path)
    bl.icons(lite0, "blocks.3", [1], store=store, progress=False, **FAST)
    bl.icons(lite0, "blocks.3", [1], store=store, progress=False, size=48, steps=9)
    bl.icons(lite0, "blocks.3", [1], store=store, progress=False, size=48, steps=8, seed=1)
    assert len(counting_render) == 3 and len(store) == 3


def test_corrupt_entry_is_rendered_again(lite0, tmp_path, counting_render):
    store = IconStore(tmp_path)
    (icon,) = bl.icons(lite0, "blocks.3", [4], store=store, progress=False, **FAST)
    path = store.path_for(icon.key)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(Warning, match=icon.key[:12]):
        (again,) = bl.icons(lite0, "blocks.3", [4], store=store, progress=False, **FAST)
    assert len(counting_render) == 2 and np.array_equal(again.image, icon.image)
    assert store.get(icon.key) is not None


def test_logit_icons_and_neurons(lite0, tmp_path):
    got = bl.icons(lite0, "logit", ["espresso"], store=tmp_path, progress=False, **FAST)
    assert got[0].meta["unit"] == "logit:967" and got[0].image.shape == (48, 48, 3)
    got = bl.icons(lite0, "blocks.9", ["3@7,7"], store=False, progress=False, **FAST)
    assert got[0].meta["unit"] == "neuron:3@7,7"


def test_cli_vis_writes_pngs_and_json(tmp_path, capsys):
    args = ["vis", "blocks.3:1", "logit:282", "--size", "48", "--steps", "8", "--out", str(tmp_path / "out"),
            "--store", str(tmp_path / "store"), "--json", "--no-progress"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    files = [r["file"] for r in data["icons"]]
    assert [r["target"] for r in data["icons"]] == ["blocks.3:1", "logit:282"]
    assert all((tmp_path / "out" / f.split("/")[-1]).exists() for f in files)
    assert (tmp_path / "out" / "sheet.png").exists()
    assert main(["vis", "blocks.3:99", "--out", str(tmp_path / "x")]) == 2
    assert "40 channels" in capsys.readouterr().err


def test_the_preset_asked_for_is_the_recipe_rendered(lite0, tmp_path, capsys):
    """One merge (recipes.preset_options): `vis --preset lucid` renders Lucid's recipe on any device, not the
    device preset's extra options (contrast ramp, coarse-to-fine) under Lucid's size and steps."""
    from blocklens.recipes import icon_recipe
    from blocklens.store import icon_key

    args = ["vis", "blocks.3:1", "--preset", "lucid", "--size", "32", "--steps", "2", "--out", str(tmp_path / "o"),
            "--no-cache", "--json", "--no-progress"]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out)["icons"][0]
    assert row["key"] == icon_key(lite0.fingerprint, "blocks.3", "channel:1", icon_recipe("lucid", size=32, steps=2))
    got = bl.icons(lite0, "blocks.3", [1], store=False, progress=False, preset="lucid", size=32, steps=2, seed=None)
    assert got[0].key == row["key"] and got[0].meta["recipe"]["contrast"] is None  # None: the preset's value
    with pytest.raises(bl.BlocklensError, match=r"unknown preset 'fast'; valid: default, quick, lucid"):
        bl.icons(lite0, "blocks.3", [1], store=False, preset="fast")


def test_cli_recipe_flags_merge_over_the_preset():
    from types import SimpleNamespace

    from blocklens.cli.args import icon_recipe as cli_icon_recipe, recipe_args
    from blocklens.recipes import PRESETS, default_preset

    flags = SimpleNamespace(preset="lucid", size=None, steps=48, seed=None)
    assert cli_icon_recipe(flags, None) == dict(PRESETS["lucid"]["icons"], steps=48)
    assert recipe_args(flags, None) == dict(PRESETS["lucid"]["icons"], steps=48)
    none = SimpleNamespace(preset=None, size=None, steps=None, seed=None)
    assert recipe_args(none, None) is None
    assert recipe_args(none, "device") == PRESETS[default_preset()]["icons"]
    assert recipe_args(SimpleNamespace(preset=None, size=None, steps=None, seed=3), None) == \
        dict(PRESETS[default_preset()]["icons"], seed=3)
