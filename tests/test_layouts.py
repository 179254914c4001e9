"""Layouts: conv maps, channels-last maps, token grids and attention internals, on small hand-written models
shaped like the architectures people use (the real torchvision / timm ones are in tests/arch, in their own
environment). Every building block must see canonical (C, H, W) activations, edits must land back in the
module's own layout, and in-place ops after an edited layer must not break attribution."""
import time

import numpy as np
import pytest
import torch
from torch import nn

import blocklens as bl
from blocklens.errors import BlocklensError, CostError

from test_probe import all_hooks


class Permute(nn.Module):
    def __init__(self, *dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    """ConvNeXt's block: depthwise conv, then channels-last LayerNorm + MLP, permuted back, residual add."""

    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(c, c, 7, padding=3, groups=c), Permute(0, 2, 3, 1), nn.LayerNorm(c),
                                   nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c), Permute(0, 3, 1, 2))

    def forward(self, x):
        out = self.block(x)
        out += x  # in place, after the layers attribution replaces
        return out


class ConvNeXtish(nn.Module):
    def __init__(self, c=16, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.stages = nn.Sequential(CNBlock(c), nn.Conv2d(c, 2 * c, 2, stride=2), CNBlock(2 * c), CNBlock(2 * c))
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


class SwinBlock(nn.Module):
    """Channels-last throughout, like torchvision's Swin: (B, H, W, C)."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.mix = nn.Linear(c, c)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def forward(self, x):
        x = x + self.mix(self.norm(x)).roll((1, 1), dims=(1, 2))
        return x + self.mlp(x)


class Swinish(nn.Module):
    def __init__(self, c=16, classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(3, c, 8, stride=8), Permute(0, 2, 3, 1)),
                                      SwinBlock(c), SwinBlock(c), SwinBlock(c))
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        return self.head(self.features(x).mean((1, 2)))


class Attention(nn.Module):
    def __init__(self, c, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(c, 3 * c)
        self.q_norm = nn.Identity()  # timm's place: sees (B, heads, N, d)
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q = self.q_norm(q)
        attn = (q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class EncoderBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(c), Attention(c)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTish(nn.Module):
    """A ViT with a CLS token and a fixed input size (it refuses any other, like torchvision's)."""

    def __init__(self, size=64, patch=8, c=32, classes=10, depth=3):
        super().__init__()
        self.size = size
        self.patch = nn.Conv2d(3, c, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, c) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, c) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(c) for _ in range(depth)])
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"wrong image size {tuple(x.shape[-2:])}, expected {self.size}")
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


def _model(net, size):
    torch.manual_seed(0)
    return bl.wrap(net.eval(), input_size=size)


@pytest.fixture(scope="module")
def convnext():
    torch.manual_seed(0)
    return _model(ConvNeXtish(), 64)


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return _model(Swinish(), 64)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return _model(ViTish(), 64)


def test_layouts_are_found(convnext, swin, vit):
    L = convnext.layers
    assert L["stem"].layout == "chw" and L["stem"].shape == (16, 16, 16)
    ln = L["stages.0.block.2"]
    assert ln.layout == "hwc" and ln.shape == (16, 16, 16) and ln.native_shape == (16, 16, 16)
    assert L["stages.0.block.3"].layout == "hwc" and L["stages.0.block.3"].shape == (64, 16, 16)
    assert L["stages.2"].layout == "chw" and L["stages.2"].shape == (32, 8, 8)
    assert L["head"].layout == "vector"
    assert not convnext.fixed_size

    assert swin.layers["features.1"].layout == "hwc" and swin.layers["features.1"].shape == (16, 8, 8)
    assert swin.layers["features.1"].native_shape == (8, 8, 16)

    assert vit.fixed_size
    b = vit.layers["blocks.1"]
    assert (b.layout, b.shape, b.native_shape, b.prefix_tokens) == ("tokens", (32, 8, 8), (65, 32), 1)
    assert vit.layers["blocks.1.mlp.0"].layout == "tokens" and vit.layers["blocks.1.mlp.0"].channels == 64
    q = vit.layers["blocks.1.attn.q_norm"]  # (heads, tokens, dim): not positions
    assert q.layout == "other" and not q.spatial and q.shape == (2, 65, 16)
    assert vit.layers["patch"].layout == "chw"
    with pytest.raises(BlocklensError, match="not a map of positions"):
        bl.semantic_dictionary(vit, torch.zeros(1, 3, 64, 64), "blocks.1.attn.q_norm")


def test_canonical_activations_and_edits_in_native_layout(convnext, vit):
    x = torch.randn(1, 3, 64, 64)
    native = {}
    hook = convnext.module.stages[0].block[2].register_forward_hook(lambda m, i, o: native.update(ln=o))
    try:
        a = convnext.activations(x, "stages.0.block.2")["stages.0.block.2"]
    finally:
        hook.remove()
    assert torch.allclose(a, native["ln"].permute(0, 3, 1, 2))

    # an edit works on the canonical tensor and lands in the module's layout: zeroing channel 3 of the
    # LayerNorm output zeroes feature 3 of what the following Linear sees
    seen = {}
    hook = convnext.module.stages[0].block[3].register_forward_hook(lambda m, i, o: seen.update({"in": i[0]}))

    def zero3(t):
        t = t.clone()
        t[:, 3] = 0
        return t
    try:
        with convnext.probe(["stages.0.block.2"], edit={"stages.0.block.2": zero3}) as p:
            p.run(x, stop=False)
    finally:
        hook.remove()
    assert seen["in"].shape == (1, 16, 16, 16) and seen["in"][..., 3].abs().max() == 0
    assert seen["in"][..., 4].abs().max() > 0

    t = vit.activations(x, "blocks.1")["blocks.1"]
    full = {}
    hook = vit.module.blocks[1].register_forward_hook(lambda m, i, o: full.update(o=o))
    try:
        vit.module(x)
    finally:
        hook.remove()
    assert t.shape == (1, 32, 8, 8)
    assert torch.allclose(t.flatten(2).transpose(1, 2), full["o"][:, 1:])  # the CLS token is held apart


@pytest.mark.parametrize("name,layer", [("convnext", "stages.0.block.2"), ("convnext", "stages.2"),
                                        ("swin", "features.2"), ("vit", "blocks.1")])
def test_attribution_adds_up_on_every_layout(request, name, layer):
    """Path attribution's completeness holds through permutes and token grids, and the in-place residual add
    after an edited layer is harmless (it raised 'a leaf Variable that requires grad is being used in an
    in-place operation' before)."""
    model = request.getfixturevalue(name)
    x = torch.randn(1, 3, 64, 64)
    lin = bl.channel_attribution(model, x, layer, [0, 1])
    assert np.isfinite(lin.values).all() and lin.values.shape == (model.layers[layer].channels,)
    path = bl.channel_attribution(model, x, layer, 0, method="path", steps=64)
    if name == "convnext":
        assert path.gap < 0.02, path.gap
    else:  # a LayerNorm follows: norm(a * A) jumps near a = 0, which 64 midpoint steps do not resolve; reported
        assert path.gap is not None and np.isfinite(path.gap)
    sp = bl.spatial_attribution(model, x, layer, 0)
    assert sp.maps.shape == model.layers[layer].shape[1:]


@pytest.mark.parametrize("name", ["convnext", "swin", "vit"])
def test_explain_numbers_on_every_layout(request, name):
    model = request.getfixturevalue(name)
    before = all_hooks(model.module)
    e = bl.explain(torch.randn(1, 3, 64, 64), model=model, icons=False, grids=False, store=False,
                   group_counts=[2, 3], n_groups=3)
    assert len(e.layers) == 2 and all(model.layers[l.layer].spatial for l in e.layers)
    for l in e.layers:
        c, h, w = model.layers[l.layer].shape
        assert l.activations.shape == (c, h, w) and l.groups.spatial.shape == (3, h, w)
        assert l.dictionary.channels.shape[:2] == (h, w)
    assert e.flows[0]["spatial"].shape[:2] == model.layers[e.layers[1].layer].shape[1:]
    assert all_hooks(model.module) == before


def test_default_layers_are_blocks_with_a_sensible_grid(convnext, swin, vit):
    assert bl.explain.__module__  # the function, not the module
    from blocklens.recipes import default_layers

    for model in (convnext, swin, vit):
        for name in default_layers(model):
            info = model.layers[name]
            assert info.spatial and 7 <= info.height <= 28, (model.name, name, info)
    assert all(n.startswith("blocks.") and n.count(".") == 1 for n in default_layers(vit))


def test_render_on_a_fixed_size_model_and_channels_last_layers(vit, swin):
    r = bl.render(vit, ["blocks.1:0", "blocks.1:1"], size=32, steps=6, progress=False)
    assert r.images.shape == (2, 32, 32, 3) and np.isfinite(r.images).all()
    assert r.history[-1].mean() > r.history[0].mean()
    r = bl.render(swin, ["features.2:3"], size=48, steps=6, progress=False)
    assert r.history[-1, 0] > r.history[0, 0]


def test_layer_to_layer_cost_guard_answers_at_once(convnext):
    big = bl.wrap(ConvNeXtish().eval(), input_size=256)  # stem 64x64 = 4096 positions
    assert big.layers["stages.0"].positions == 64 * 64
    t = time.perf_counter()
    with pytest.raises(CostError, match=r"4096 positions \(64x64\).*max_positions=4096"):
        bl.spatial_attribution(big, torch.zeros(1, 3, 256, 256), "stem", "stages.0")
    with pytest.raises(CostError, match="max_cells"):
        bl.activation_grid(big, torch.zeros(1, 3, 256, 256), "stages.0", steps=1)
    assert time.perf_counter() - t < 1.0
    ok = bl.spatial_attribution(convnext, torch.zeros(1, 3, 64, 64), "stem", "stages.2", max_positions=64)
    assert ok.maps.shape == (8, 8, 16, 16)


class GrayNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                                      nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        assert x.shape[1] == 1, x.shape
        return self.fc(self.features(x).mean((2, 3)))


def test_grayscale_model(tmp_path):
    torch.manual_seed(0)
    m = bl.wrap(GrayNet().eval(), input_size=32, input_channels=1, mean=(0.5,), std=(0.5,))
    assert m.preprocess(bl.bundled_image("chelsea")).shape == (1, 1, 32, 32)
    assert len(m.predict(bl.bundled_image("chelsea"), top=2)) == 2
    assert m.layers["features.2"].shape[0] == 8
    r = bl.render(m, ["features.2:1"], size=32, steps=8, progress=False)
    img = bl.icons(m, "features.2", [1], store=False, size=32, steps=8)[0].image
    assert np.allclose(img[..., 0], img[..., 1], atol=1) and np.allclose(img[..., 1], img[..., 2], atol=1)  # grey
    assert r.history[-1, 0] > r.history[0, 0]
    with pytest.raises(BlocklensError, match="input_channels=4: pass mean= and std="):
        bl.wrap(GrayNet(), input_channels=4)
    with pytest.raises(BlocklensError, match="one value per input channel"):
        bl.wrap(GrayNet(), input_channels=1, mean=(0.5, 0.5, 0.5), std=(0.5,))
    with pytest.raises(BlocklensError, match="1 \\(grayscale\\), 3 \\(RGB\\) or 4"):
        bl.wrap(GrayNet(), input_channels=2, mean=(0.5,) * 2, std=(0.5,) * 2)


def test_a_model_built_on_lite0_gets_lite0s_layers(lite0):
    """A fine-tuned Lite0 (new head, new name) keeps the zoo's default layers: class concepts and the dictionary
    at blocks.11, where planted heads were measured (bench/bench_default_layer.py), not the generic blocks.13."""
    import copy

    from blocklens.recipes import ARCHITECTURES, architecture_key, concept_layer, default_layers, layer_candidates

    assert ARCHITECTURES[architecture_key(lite0)] == "efficientnet_lite0"
    net = copy.deepcopy(lite0.module)
    net.fc = torch.nn.Linear(net.fc.in_features, 2)
    head = bl.wrap(net, labels=["a", "b"], normalize=lite0.normalize, input_size=lite0.input_size,
                   resize=lite0.resize, name="lite0-head-a-b")
    assert default_layers(head) == default_layers(lite0) == ["blocks.7", "blocks.11"]
    assert concept_layer(head) == "blocks.11"
    other = bl.wrap(copy.deepcopy(lite0.module), input_size=160, name="lite0-at-160")  # other shapes: generic rule
    names = [i.name for i in layer_candidates(other)]
    assert default_layers(other) == [names[len(names) // 2], names[3 * len(names) // 4]]
