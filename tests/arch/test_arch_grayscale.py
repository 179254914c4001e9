"""A grayscale model (one input channel) wrapped with input_channels=1 predicts and renders."""
import numpy as np
import pytest
import torch
from torch import nn

import blocklens as bl

pytestmark = pytest.mark.arch


def _gray_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def test_grayscale_model_predicts_and_renders():
    m = bl.wrap(_gray_net(), input_channels=1, mean=(0.5,), std=(0.5,), input_size=64,
                labels=[f"digit {i}" for i in range(10)])
    x = m.preprocess(bl.bundled_image("dog"))
    assert tuple(x.shape) == (1, 1, 64, 64)
    preds = m.predict(bl.bundled_image("dog"), top=3)
    assert len(preds) == 3 and abs(sum(p.prob for p in m.predict(x, top=10)) - 1) < 1e-4
    assert m.layer("0").shape == (8, 62, 62) and m.layer("0").layout == "chw"
    r = bl.render(m, ["2:0", "2:1"], size=32, steps=4, progress=False)
    assert r.images.shape[0] == 2 and r.images.shape[1:3] == (32, 32)
    assert np.isfinite(r.images).all()
