"""A few icons render on each real architecture; ViTs accept only 224x224, so the library resizes to it."""
import numpy as np
import pytest

import blocklens as bl
from .archspecs import MID_LAYER

pytestmark = pytest.mark.arch


def test_icons_render(arch, timing):
    model_id, m = arch
    layer = MID_LAYER[model_id]
    with timing(model_id, "render"):
        r = bl.render(m, [f"{layer}:0", f"{layer}:1"], size=56, steps=4, progress=False)
    assert r.images.shape[:3] == (2, 56, 56), r.images.shape
    assert np.isfinite(r.images).all()
    assert np.isfinite(r.history).all()
