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


@pytest.mark.parametrize("model_id, layer", [("resnet50", "layer3.0.bn3"),  # then `out += identity` in place
                                             ("resnet50", "layer2.1.conv3")])
def test_attribution_on_a_layer_followed_by_an_in_place_op(model_id, layer):
    """The layer's output is replaced by a leaf that requires grad; the network's own in-place work after it
    (ResNet's residual add, inplace ReLU) must land on a copy."""
    from .archspecs import wrapped

    m = wrapped(model_id)
    a = bl.channel_attribution(m, bl.bundled_image("dog"), layer, [0, 1])
    assert a.values.shape == (m.layer(layer).channels,)


@pytest.mark.parametrize("model_id, want", [
    ("resnet50", ["layer3.2", "layer3.5"]), ("googlenet", ["inception4c", "inception4e"]),
    ("vit_b_16", ["encoder.layers.encoder_layer_6", "encoder.layers.encoder_layer_9"]),
    ("swin_t", ["features.5.2", "features.5.5"]), ("timm_vit_small_patch16_224", ["blocks.5", "blocks.8"]),
    ("mobilenet_v3_large", ["features.10", "features.13"]), ("convnext_tiny", ["features.5.4", "features.5.8"]),
    ("timm_efficientnet_b0", ["blocks.4.2", "blocks.5.2"]),
    # a dense block is a ModuleDict with a forward of its own, a transition a Sequential subclass of single layers:
    # both are blocks, never one dense layer's 32 new channels (features.denseblock3.denselayer15)
    ("densenet121", ["features.denseblock3", "features.transition3"])])
def test_default_layers_are_block_outputs(model_id, want):
    """Block outputs at 1/2 and 3/4 depth, never a stage's inside (a BatchNorm, a branch) nor one whole encoder."""
    from blocklens.recipes import default_layers

    from .archspecs import wrapped

    assert default_layers(wrapped(model_id)) == want
