"""Neuron groups: factorization quality, exact attribution through groups, order, colours, errors, JSON."""
import json
import warnings

import numpy as np
import pytest
import torch

import blocklens as bl
from blocklens.analyses.colors import BACKGROUND, blend, group_colors, oklab_to_linear_srgb
from blocklens.analyses.groups import NeuronGroups, group_attribution
from blocklens.blocks import neuron_groups
from blocklens.errors import BlocklensError, UnknownNameError

from conftest import assert_close

WIDE = "blocks.9.expand.act"   # post-ReLU6, 672 channels at 14x14
SIGNED = "blocks.9"            # block output (linear bottleneck), 112 channels at 14x14


@pytest.fixture(scope="module")
def dog():
    return bl.bundled_image("dog")


@pytest.fixture(scope="module")
def wide(lite0, dog):
    return neuron_groups(lite0, dog, WIDE)


@pytest.fixture(scope="module")
def signed(lite0, dog):
    return neuron_groups(lite0, dog, SIGNED)


def _matrix(a):
    """(C, H, W) -> the (H*W, C or 2C) non-negative matrix, written out independently of factorize.py."""
    flat = a.reshape(a.shape[0], -1).T.astype(np.float64)
    return np.hstack([np.maximum(flat, 0), np.maximum(-flat, 0)]) if flat.min() < 0 else flat


@pytest.mark.parametrize("which", ["wide", "signed"])
def test_reconstruction_error_matches_sklearn(lite0, dog, which, request):
    from sklearn.decomposition import NMF

    g = request.getfixturevalue(which)
    a = lite0.activations(lite0.preprocess(dog), g.layer)[g.layer][0].numpy()
    x = _matrix(a)
    assert g.signed == (which == "signed") and g.channel_nonneg.shape == (6, x.shape[1])
    ours = np.linalg.norm(x - g.spatial.reshape(6, -1).T.astype(np.float64) @ g.channel_nonneg)
    sk = NMF(n_components=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at its default 200 iterations
        w = sk.fit_transform(x)
    theirs = np.linalg.norm(x - w @ sk.components_)
    assert ours <= 1.05 * theirs, (ours, theirs)
    assert g.relative_error == pytest.approx(ours / np.linalg.norm(x), rel=1e-3)
    if g.signed:  # the signed direction folds the two halves
        c = a.shape[0]
        np.testing.assert_allclose(g.channel, g.channel_nonneg[:, :c] - g.channel_nonneg[:, c:], atol=1e-6)


def _whole_by_hand(model, x, layer, classes):
    """sum(A * dlogit/dA) per class with a plain forward hook (no probe, no blocklens analysis code)."""
    saved = {}
    handle = model.module.get_submodule(layer).register_forward_hook(lambda _m, _i, out: saved.setdefault("a", out))
    try:
        logits = model.module(x.clone().requires_grad_(True))
    finally:
        handle.remove()
    a = saved["a"]
    grads = [torch.autograd.grad(logits[0, c], a, retain_graph=True)[0] for c in classes]
    return np.array([float((a.detach().double() * g.double()).sum()) for g in grads])


@pytest.mark.parametrize("which", ["wide", "signed"])
def test_group_attribution_to_classes_adds_up(lite0, dog, which, request):
    g = request.getfixturevalue(which)
    n = len(g.classes)
    assert g.classes == [p.index for p in lite0.predict(dog, top=5)]
    assert g.attribution.shape == (6, n) and g.residual.shape == (n,) and g.whole.shape == (n,)
    total = g.attribution.sum(0) + g.residual
    np.testing.assert_allclose(total, g.whole, rtol=1e-4, atol=1e-8)
    assert_close(g.whole, _whole_by_hand(lite0, lite0.preprocess(dog), g.layer, g.classes))  # another code path
    assert np.abs(g.residual).sum() <= 0.05 * np.abs(g.attribution).sum()


def test_classes_by_name_and_index(lite0, dog):
    g = neuron_groups(lite0, dog, SIGNED, 3, classes=["malamute", 235])
    assert g.classes == [249, 235] and g.labels == ["malamute", "German shepherd"]
    assert g.attribution.shape == (3, 2)
    np.testing.assert_allclose(g.attribution.sum(0) + g.residual, g.whole, rtol=1e-4)


@pytest.mark.parametrize("which", ["wide", "signed"])
def test_order_colors_and_shapes(which, request):
    g = request.getfixturevalue(which)
    c = 672 if which == "wide" else 112
    assert g.spatial.shape == (6, 14, 14) and g.spatial.dtype == np.float32 and g.spatial.min() >= 0
    assert g.channel.shape == (6, c) and g.peak.shape == (6, 2)
    for k in range(6):  # peak is (x, y) of the spatial maximum
        x, y = g.peak[k]
        assert g.spatial[k, y, x] == g.spatial[k].max()
    keys = [tuple(p) for p in g.peak]
    assert keys == sorted(keys)  # left to right, ties top to bottom
    assert g.colors.shape == (6, 3) and g.colors.dtype == np.uint8
    assert len({tuple(col) for col in g.colors}) == 6
    assert g.cell_colors.shape == (14, 14, 3) and g.cell_colors.dtype == np.uint8
    for k in range(6):  # a group's peak cell leans towards that group's colour
        x, y = g.peak[k]
        d = np.abs(g.colors.astype(int) - g.cell_colors[y, x].astype(int)).sum(1)
        assert d[k] <= np.median(d)
    assert len(repr(g)) < 120 and g.layer in repr(g)


def test_colors_module():
    # OKLab of sRGB red and of white, from the published definition (Ottosson 2020)
    np.testing.assert_allclose(oklab_to_linear_srgb([0.627955, 0.224863, 0.125846]), [1, 0, 0], atol=2e-4)
    np.testing.assert_allclose(oklab_to_linear_srgb([1.0, 0.0, 0.0]), [1, 1, 1], atol=1e-6)
    for k in (1, 2, 6, 12):
        cols = group_colors(k)
        assert cols.shape == (k, 3) and cols.dtype == np.uint8 and len({tuple(c) for c in cols}) == k
    cols = group_colors(3)
    s = np.zeros((3, 2, 2))
    s[0, 0, 0] = 2.0          # only group 0
    s[1, 0, 1] = s[2, 0, 1] = 1.0   # groups 1 and 2 equally (each at its max)
    s[1, 1, 0] = 0.5          # group 1 alone but weak: still group 1's colour
    img = blend(s, cols)      # (2, 2, 3); cell (1, 1) is empty
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == tuple(cols[0]) and tuple(img[1, 0]) == tuple(cols[1])
    np.testing.assert_allclose(img[0, 1], (cols[1].astype(float) + cols[2]) / 2, atol=1)
    assert tuple(img[1, 1]) == BACKGROUND


def test_group_attribution_between_layers(lite0, dog, wide, signed):
    ga = group_attribution(lite0, dog, wide, signed)
    assert ga.shape == (6, 6) and np.isfinite(ga).all() and np.abs(ga).max() > 0

    # one pair, computed independently: a plain hook, a hand-written score, a hand-written split
    g, h = 1, 2
    saved = {}

    def keep(name):
        def hook(_m, _i, out):
            saved[name] = out
        return hook

    handles = [lite0.module.get_submodule(n).register_forward_hook(keep(n)) for n in (WIDE, SIGNED)]
    try:
        lite0.module(lite0.preprocess(dog).requires_grad_(True))
    finally:
        for hd in handles:
            hd.remove()
    a1, a2 = saved[WIDE], saved[SIGNED][0].double()
    x2 = torch.cat([torch.relu(a2), torch.relu(-a2)])                      # (2C2, H, W)
    s2, w2 = torch.from_numpy(signed.spatial[h]).double(), torch.from_numpy(signed.channel_nonneg[h]).double()
    p = s2[None] * w2[:, None, None]                                         # the pattern P_h (2C2, H, W)
    score = (x2 * p).sum() / (p * p).sum()
    (grad,) = torch.autograd.grad(score, a1)
    a = a1.detach()[0].double().numpy()
    recon = [s[None] * w[:, None, None] for s, w in zip(wide.spatial.astype(np.float64),
                                                         wide.channel_nonneg.astype(np.float64))]
    total = sum(recon)
    share = np.where(total > 0, a * recon[g] / np.where(total > 0, total, 1), 0)
    expected = float((share * grad[0].double().numpy()).sum())
    assert ga[g, h] == pytest.approx(expected, rel=1e-5, abs=1e-8)

    with pytest.raises(BlocklensError, match="must run before"):
        group_attribution(lite0, dog, signed, wide)


def test_bad_input(lite0, dog):
    with pytest.raises(BlocklensError, match=r"n_groups=200 .*112 channels.*'blocks\.9'"):
        neuron_groups(lite0, dog, SIGNED, 200)
    for layer in ("pool", "fc"):
        with pytest.raises(BlocklensError, match="positions"):
            neuron_groups(lite0, dog, layer)
    with pytest.raises(UnknownNameError, match="unknown class"):
        neuron_groups(lite0, dog, SIGNED, classes=["not a class at all"])
    with pytest.raises(BlocklensError, match="out of range"):
        neuron_groups(lite0, dog, SIGNED, classes=[5000])
    with pytest.raises(BlocklensError, match="icons=True"):
        neuron_groups(lite0, dog, SIGNED, steps=4)


def test_to_json_round_trips(signed):
    data = json.loads(json.dumps(signed.to_json()))
    assert data["layer"] == SIGNED and data["n_groups"] == 6 and data["signed"] is True
    assert np.array(data["spatial"]).shape == (6, 14, 14) and np.array(data["cell_colors"]).shape == (14, 14, 3)
    assert data["classes"] == signed.classes and data["labels"] == signed.labels and data["icons"] is None
    np.testing.assert_allclose(data["attribution"], signed.attribution, rtol=1e-5, atol=1e-9)


def test_icons(lite0, dog, tmp_path):
    g = neuron_groups(lite0, dog, SIGNED, 2, classes=[249], icons=True, size=48, steps=4, store=tmp_path)
    assert isinstance(g, NeuronGroups) and len(g.icons) == 2
    assert all(i.image.shape[:2] == (48, 48) for i in g.icons)
    keys = g.to_json()["icons"]
    assert len(set(keys)) == 2 and all(isinstance(k, str) and k for k in keys)
    assert bl.IconStore(tmp_path).get(keys[0]) is not None
