"""Attribution adds up, matches independent computations and a peer (Captum), and explains its errors."""
import numpy as np
import pytest
import torch

import blocklens as bl
from blocklens.analyses.attribution import spatial_attribution
from blocklens.blocks import channel_attribution
from blocklens.analyses.common import prepare
from blocklens.errors import BlocklensError, UnknownNameError

from conftest import assert_close


def independent_grad_x_act(model, x, layer, cls):
    """gradient of the logit w.r.t. the layer times the activation, with a plain hook (no blocklens probe)."""
    module = dict(model.module.named_modules())[layer]
    saved = {}

    def hook(_m, _i, out):
        out = out.detach().requires_grad_(True)
        saved["a"] = out
        return out

    h = module.register_forward_hook(hook)
    try:
        logits = model.module(x)
    finally:
        h.remove()
    (g,) = torch.autograd.grad(logits[0, cls], saved["a"])
    return (g * saved["a"]).detach()[0]


@pytest.mark.parametrize("layer", ["blocks.3", "blocks.9"])
def test_linear_equals_independent_computation(lite0, layer):
    x = prepare(lite0, bl.bundled_image("chelsea")).x
    ours = channel_attribution(lite0, x, layer, "tiger cat")
    ref = independent_grad_x_act(lite0, x, layer, 282).sum((1, 2)).double().numpy()
    assert_close(ours.values, ref)
    spatial = spatial_attribution(lite0, x, layer, "tiger cat")
    assert_close(spatial.maps, independent_grad_x_act(lite0, x, layer, 282).sum(0))


def test_linear_matches_captum(lite0):
    from captum.attr import LayerGradientXActivation

    x = prepare(lite0, bl.bundled_image("dog")).x
    module = dict(lite0.module.named_modules())["blocks.7"]
    theirs = LayerGradientXActivation(lite0.module, module).attribute(x, target=249)[0].sum((1, 2))
    ours = channel_attribution(lite0, x, "blocks.7", "malamute").values
    assert_close(ours, theirs)


def test_path_completeness_one_image(lite0):
    x = prepare(lite0, bl.bundled_image("coffee")).x
    r = channel_attribution(lite0, x, "blocks.9", "espresso", method="path", tolerance=0.01)
    assert r.gap < 0.01
    assert abs(r.values.sum() - (r.score - r.baseline)) <= 0.01 * abs(r.score - r.baseline)
    assert r.steps >= 50


@pytest.mark.parametrize("image, cls", [("chelsea", "tiger cat"), ("dog", "malamute"), ("collies", "Border collie")])
@pytest.mark.parametrize("layer", ["blocks.5", "blocks.11"])
def test_path_completeness_three_images_two_layers(lite0, image, cls, layer):
    r = channel_attribution(lite0, bl.bundled_image(image), layer, cls, method="path", tolerance=0.01)
    assert abs(r.values.sum() - (r.score - r.baseline)) <= 0.01 * abs(r.score - r.baseline)
    assert r.gap < 0.01


def test_class_pair_and_top_channels(lite0):
    r = channel_attribution(lite0, bl.bundled_image("dog"), "blocks.9", ("malamute", "German shepherd"), top=4)
    a = channel_attribution(lite0, bl.bundled_image("dog"), "blocks.9", "malamute").values
    b = channel_attribution(lite0, bl.bundled_image("dog"), "blocks.9", "German shepherd").values
    assert_close(r.values, a - b)
    assert len(r.positive) == 4 and all(v > 0 for _, v in r.positive)
    assert [c for c, _ in r.positive] == list(np.argsort(-r.values)[:4])
    assert r.labels == ["malamute", "German shepherd"]


def test_layer_to_layer_equals_per_position_loop(lite0):
    x = prepare(lite0, bl.bundled_image("dog")).x
    ours = spatial_attribution(lite0, x, "blocks.5", "blocks.9")
    assert ours.maps.shape == (14, 14, 14, 14)
    leaf = {}
    with lite0.probe(["blocks.5", "blocks.9"], grad=True,
                     edit={"blocks.5": lambda t: leaf.setdefault("a", t.detach().requires_grad_(True))}) as p:
        p.run(x)
    a1, a2 = leaf["a"], p.activations["blocks.9"]
    for (y, xx) in [(0, 0), (7, 3), (13, 13), (5, 10)]:
        (g,) = torch.autograd.grad(a2[0, :, y, xx].norm(), a1, retain_graph=True)
        ref = (a1 * g).sum(1)[0].double().detach().numpy()
        assert_close(ours.maps[y, xx], ref, err_msg=str((y, xx)))
    batched = spatial_attribution(lite0, x, "blocks.5", "blocks.9", strategy="batched", chunk=49)
    # float32 sums in another order: equal to 1e-5 of the map's scale
    assert np.abs(batched.maps - ours.maps).max() <= 1e-5 * ours.scale


def test_layer_to_layer_path_adds_up(lite0):
    x = prepare(lite0, bl.bundled_image("dog")).x
    r = spatial_attribution(lite0, x, "blocks.7", "blocks.9", method="path", steps=8)
    assert r.maps.shape == (14, 14, 14, 14) and np.isfinite(r.maps).all()


def test_bad_input(lite0):
    img = bl.bundled_image("dog")
    with pytest.raises(BlocklensError, match="positions"):
        spatial_attribution(lite0, img, "pool", "malamute")
    with pytest.raises(UnknownNameError, match="malamute"):
        channel_attribution(lite0, img, "blocks.9", "malamut")
    with pytest.raises(BlocklensError, match="after"):
        spatial_attribution(lite0, img, "blocks.9", "blocks.5")
    with pytest.raises(BlocklensError, match="method"):
        channel_attribution(lite0, img, "blocks.9", "malamute", method="ig")
    with pytest.raises(BlocklensError, match="one class or two"):
        channel_attribution(lite0, img, "blocks.9", ["malamute", "tabby", "espresso"])


def test_class_gradients_batch_equals_one_by_one(lite0):
    from blocklens.analyses.attribution import class_gradients

    x = prepare(lite0, bl.bundled_image("dog")).x
    act, grads, logits = class_gradients(lite0, x, "blocks.9", [249, 235, 3])
    for k, c in enumerate([249, 235, 3]):
        one = channel_attribution(lite0, x, "blocks.9", c)
        assert_close((act * grads[k]).sum((1, 2)), one.values)
        assert_close(float(logits[k]), one.score, atol=1e-4)


def test_icons_for_the_top_channels(lite0, tmp_path):
    r = channel_attribution(lite0, bl.bundled_image("dog"), "blocks.11", "malamute", top=2, icons=True,
                            store=tmp_path, size=32, steps=2, progress=False)
    assert set(r.icons) == {c for c, _ in r.positive + r.negative}
    assert all(i.meta["layer"] == "blocks.11" for i in r.icons.values())
    assert set(r.to_json()["icons"]) == {str(c) for c in r.icons}
