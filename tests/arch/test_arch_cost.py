"""Layer-to-layer spatial attribution onto a layer with too many positions is refused up front, in under a
second, with bl.CostError (a bl.BlocklensError) naming the bound."""
import time

import pytest

import blocklens as bl
from .archspecs import TOO_MANY_POSITIONS, wrapped

pytestmark = pytest.mark.arch


@pytest.mark.timeout(30)  # without the bound the attribution runs 3136 backward passes: many minutes
@pytest.mark.parametrize("model_id", list(TOO_MANY_POSITIONS))
def test_too_many_positions_is_a_cost_error(model_id):
    m = wrapped(model_id)
    source, target = TOO_MANY_POSITIONS[model_id]
    assert m.layer(target).height * m.layer(target).width == 56 * 56
    assert issubclass(bl.CostError, bl.BlocklensError)
    t = time.perf_counter()
    with pytest.raises(bl.CostError) as err:
        bl.spatial_attribution(m, bl.bundled_image("dog"), source, target)
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0, f"CostError after {elapsed:.2f} s"
    assert "max_positions" in str(err.value)
