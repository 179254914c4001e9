"""bl.explain (numbers only) on each real architecture, on its default layers."""
import pytest

import blocklens as bl

pytestmark = pytest.mark.arch


def test_explain_numbers_on_default_layers(arch, timing, tmp_path):
    model_id, m = arch
    with timing(model_id, "explain"):
        e = bl.explain(bl.bundled_image("dog"), model=m, preset="quick", icons=False, grids=False,
                       store=tmp_path / "store", progress=False)
    assert len(e.layers) >= 1
    for le in e.layers:
        i = m.layer(le.layer)
        assert i.spatial and i.layout in ("chw", "hwc", "tokens"), (le.layer, i.layout)
        assert 7 <= i.height <= 28 and 7 <= i.width <= 28, (le.layer, i.shape)
        assert tuple(le.shape) == tuple(i.shape)
    assert len(e.predictions) >= 2 and e.pair[0] != e.pair[1]
    assert len(e.flows) == len(e.layers) - 1
