"""explain(): every block for one image, consistent with the blocks computed alone, serializable, cached."""
import json

import numpy as np
import pytest

import blocklens as bl
from blocklens.errors import BlocklensError

TINY = dict(icon_recipe=dict(size=32, steps=2), grid_recipe=dict(cell=32, steps=2, batch_cells=16))


@pytest.fixture(scope="module")
def explained(lite0, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    return bl.explain(bl.bundled_image("dog"), model=lite0, layers=["blocks.11", "blocks.7"], store=store,
                      progress=False, **TINY), store


def test_structure_and_consistency(explained, lite0):
    e, _ = explained
    assert [l.layer for l in e.layers] == ["blocks.7", "blocks.11"]  # forward order
    assert e.predictions[0]["label"] == "malamute" and e.pair == (249, 235)
    l7 = e.layer("blocks.7")
    alone = bl.channel_attribution(lite0, bl.bundled_image("dog"), "blocks.7", ("malamute", "German shepherd"))
    assert np.allclose(l7.pair.values, alone.values, atol=1e-4)
    assert np.allclose(l7.attribution[249].values - l7.attribution[235].values, alone.values, atol=1e-4)
    assert l7.spatial[249].maps.shape == (14, 14)
    assert e.flows[0]["spatial"].shape == (7, 7, 14, 14) and e.flows[0]["groups"].shape == (6, 6)
    assert set(l7.dictionary.icons) == set(l7.dictionary.used_channels)
    assert len(l7.groups.icons) == 6
    assert l7.grid is not None and l7.grid.image().size[0] > 0


def test_json_and_save(explained, tmp_path):
    e, _ = explained
    data = json.loads(json.dumps(e.to_json()))
    assert data["layers"][0]["dictionary"]["shape"] == [14, 14]
    for key in data["layers"][0]["dictionary"]["icons"].values():
        assert key in data["icons"]
    path = e.save(tmp_path / "out")
    assert path.exists() and (tmp_path / "out" / "image.png").exists()
    assert len(list((tmp_path / "out" / "icons").glob("*.png"))) == len(e.icons)


def test_warm_run_renders_nothing(explained, lite0, monkeypatch):
    e, store = explained
    import blocklens.iconcache as ic
    import blocklens.optvis.grid as grid_mod

    def fail(*a, **k):
        raise AssertionError("a warm explain must not render")

    monkeypatch.setattr(ic, "render", fail)
    monkeypatch.setattr(grid_mod, "activation_grid", fail)
    again = bl.explain(bl.bundled_image("dog"), model=lite0, layers=["blocks.7", "blocks.11"], store=store,
                       progress=False, **TINY)
    assert set(again.icons) == set(e.icons)
    assert np.array_equal(np.asarray(again.layers[0].grid.image()), np.asarray(e.layers[0].grid.image()))


def test_bad_input(lite0):
    with pytest.raises(BlocklensError, match="positions"):
        bl.explain(bl.bundled_image("dog"), model=lite0, layers=["fc"], icons=False, grids=False)
    with pytest.raises(BlocklensError, match="preset"):
        bl.explain(bl.bundled_image("dog"), model=lite0, preset="fast")
