"""explain(): every block for one image, consistent with the blocks computed alone, serializable, cached."""
import json

import numpy as np
import pytest

import blocklens as bl
from blocklens.errors import BlocklensError

from conftest import assert_close

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
    assert_close(l7.pair.values, alone.values, atol=1e-4)  # every class in one batch vs the pair alone
    assert_close(l7.attribution[249].values - l7.attribution[235].values, alone.values, atol=1e-4)
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


# --- explain's phases, each alone -----------------------------------------------------------------------------


def test_option_phases():
    from blocklens.explain import ATTRIBUTION, _check_options, _group_counts, _methods

    assert _group_counts("quick", None, 6) == [3, 4, 5, 6] and _group_counts("quick", [2, 2], 6) == [2, 6]
    with pytest.raises(BlocklensError, match="positive"):
        _group_counts("quick", [0], 6)
    assert _methods(None, None) == ATTRIBUTION
    assert _methods("logit", "linear") == dict(ATTRIBUTION, score="logit", groups="linear")
    _check_options(None, True, "cached")
    with pytest.raises(BlocklensError, match="preset"):
        _check_options("fast", True, True)
    with pytest.raises(BlocklensError, match="grids must be"):
        _check_options("quick", True, "yes")


def test_layer_phases_give_the_explanation_numbers(explained, lite0):
    """One layer's blocks and one flow, computed alone, are the explanation's."""
    from blocklens.analyses.common import prepare
    from blocklens.explain import (ATTRIBUTION, _explain_layer, _explained_classes, _flow, _layer_names)

    e, _ = explained
    prep = prepare(lite0, bl.bundled_image("dog"))
    assert _layer_names(lite0, ["blocks.11", "blocks.7", "blocks.11"]) == ["blocks.7", "blocks.11"]
    cls, predictions = _explained_classes(lite0, prep, None, 5)
    assert cls == e.classes and predictions == e.predictions
    with pytest.raises(BlocklensError, match="two classes"):
        _explained_classes(lite0, prep, ["malamute"], 5)
    a, b = (_explain_layer(lite0, prep, name, cls, [6], 6, ATTRIBUTION, False) for name in ("blocks.7", "blocks.11"))
    mine = e.layer("blocks.7")
    assert np.array_equal(a.pair.values, mine.pair.values) and a.faithfulness is None
    assert np.array_equal(a.spatial[cls[0]].maps, mine.spatial[cls[0]].maps)
    assert a.spatial[cls[0]].method == "path" and a.spatial[cls[0]].gap == mine.spatial[cls[0]].gap
    assert np.array_equal(a.groups.channel, mine.groups.channel) and list(a.group_options) == [6]
    flow = _flow(lite0, prep, a, b, ATTRIBUTION["groups"])
    assert np.array_equal(flow["spatial"], e.flows[0]["spatial"]) and set(flow["groups_by_k"]) == {6}
    assert np.array_equal(flow["groups"], e.flows[0]["groups"])
