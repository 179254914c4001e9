"""The embedded EfficientNet-Lite0: golden predictions, layers, labels, wrap()."""
import pytest
import torch
from torch import nn

import blocklens as bl
from blocklens.errors import BlocklensError, UnknownNameError

# DESIGN.md section 5: verified predictions of the reference weights.
GOLDEN = {
    "chelsea": [("tiger cat", 0.386), ("Egyptian cat", 0.356), ("tabby", 0.169)],
    "dog": [("malamute", 0.378), ("German shepherd", 0.280)],
    "coffee": [("espresso", 0.951)],
    "collies": [("Border collie", 0.723)],
}


@pytest.mark.parametrize("image", sorted(GOLDEN))
def test_golden_predictions(lite0, image):
    preds = lite0.predict(bl.bundled_image(image), top=len(GOLDEN[image]))
    for (label, prob), p in zip(GOLDEN[image], preds):
        assert p.label == label
        assert abs(p.prob - prob) < 0.01, (image, label, p.prob)


def test_architecture_and_layers(lite0):
    assert sum(p.numel() for p in lite0.module.parameters()) == 4_652_008
    assert not any(p.requires_grad for p in lite0.module.parameters())
    layers = lite0.layers
    assert layers["blocks.3"].shape == (40, 28, 28)
    assert layers["blocks.9.expand.act"].shape == (672, 14, 14)
    assert layers["blocks.15"].shape == (320, 7, 7)
    assert layers["fc"].shape == (1000,) and not layers["fc"].spatial
    # execution order: stem before blocks before head
    names = layers.names
    assert names.index("stem.conv") < names.index("blocks.0") < names.index("head.conv") < names.index("fc")


def test_other_input_sizes_work_with_same_padding(lite0):
    a = lite0.activations(torch.zeros(2, 3, 128, 128), ["blocks.3", "blocks.15"])
    assert a["blocks.3"].shape == (2, 40, 16, 16)
    assert a["blocks.15"].shape == (2, 320, 4, 4)
    odd = lite0.activations(torch.zeros(1, 3, 131, 97), "blocks.15")["blocks.15"]
    assert odd.shape == (1, 320, 5, 4)


def test_preprocess_and_normalize(lite0):
    x = lite0.preprocess(bl.bundled_image("chelsea"))
    assert x.shape == (1, 3, 224, 224)
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    crop = lite0.crop(bl.bundled_image("chelsea"))
    assert crop.size == (224, 224)
    assert torch.allclose(lite0.normalize(torch.ones(1, 3, 2, 2)), torch.full((1, 3, 2, 2), 128 / 128))


def test_unknown_names_list_closest(lite0):
    with pytest.raises(UnknownNameError, match="blocks.3"):
        lite0.layer("block.3")
    with pytest.raises(UnknownNameError, match="efficientnet_lite0"):
        bl.load_model("efficientnet_lite")
    with pytest.raises(UnknownNameError, match="tiger cat"):
        lite0.class_index("tigre cat")
    with pytest.raises(BlocklensError, match="ambiguous"):
        lite0.class_index("crane")
    with pytest.raises(BlocklensError, match="out of range"):
        lite0.class_index(1000)


def test_class_lookup(lite0):
    assert lite0.class_index("tiger cat") == 282
    assert lite0.class_index("Labrador retriever") == 208
    assert lite0.class_index("tabby cat") == 281  # a synonym
    assert lite0.class_index("340") == 340
    assert lite0.labels[967] == "espresso"


def test_fingerprint_tracks_weights():
    a, b = bl.load_model(), bl.load_model()
    assert a.fingerprint == b.fingerprint
    with torch.no_grad():
        b.module.fc.bias[0] += 1e-3
    b._fingerprint = None
    assert a.fingerprint != b.fingerprint


def test_wrap_any_module():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 3))
    model = bl.wrap(net, labels=["a", "b", "c"], input_size=32)
    assert model.layers["0"].shape == (8, 16, 16)
    preds = model.predict(bl.bundled_image("coffee"), top=2)
    assert len(preds) == 2 and {p.label for p in preds} <= {"a", "b", "c"}
    assert abs(sum(p.prob for p in model.predict(bl.bundled_image("coffee"), top=3)) - 1) < 1e-5
    unlabeled = bl.wrap(net, input_size=32)
    assert unlabeled.labels[2] == "class 2"
    with pytest.raises(BlocklensError, match="nn.Module"):
        bl.wrap(lambda x: x)
