"""Layer-to-layer spatial attribution onto a layer with too many positions is refused up front, in under a
second, with bl.CostError (a bl.BlocklensError) naming the bound."""
import signal
import time

import pytest

import blocklens as bl
from .archspecs import TOO_MANY_POSITIONS, wrapped

pytestmark = pytest.mark.arch


class _TookTooLong(Exception):
    pass


@pytest.mark.parametrize("model_id", list(TOO_MANY_POSITIONS))
def test_too_many_positions_is_a_cost_error(model_id):
    m = wrapped(model_id)
    source, target = TOO_MANY_POSITIONS[model_id]
    assert m.layer(target).height * m.layer(target).width == 56 * 56
    assert issubclass(bl.CostError, bl.BlocklensError)
    m.layers  # discovery is not what is timed

    def alarm(*_):
        raise _TookTooLong

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 10.0)  # the attribution itself would take many minutes: cut it short
    t = time.perf_counter()
    try:
        with pytest.raises(bl.CostError) as err:
            bl.spatial_attribution(m, bl.bundled_image("dog"), source, target)
    except _TookTooLong:
        pytest.fail(f"{model_id}: {source} -> {target} was still running after 10 s instead of raising CostError")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0, f"CostError after {elapsed:.2f} s"
    assert "max_positions" in str(err.value)
