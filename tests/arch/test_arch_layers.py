"""Every layer of a real architecture has a layout; known layers have the layout and shapes they should; the
activations blocklens returns for spatial layers are canonical (B, C, H, W) views of the module's output."""
import pytest
import torch

import blocklens as bl
from .archspecs import EXPECTED, LAYOUTS, MID_LAYER, SPATIAL_LAYOUTS, VITS

pytestmark = pytest.mark.arch


def test_every_layer_has_a_consistent_layout(arch):
    model_id, m = arch
    infos = list(m.layers)
    assert len(infos) > 50, f"{model_id}: only {len(infos)} layers found"
    bad = []
    for i in infos:
        layout = i.layout
        if layout not in LAYOUTS:
            bad.append(f"{i.name}: layout {layout!r}")
            continue
        if i.spatial != (layout in SPATIAL_LAYOUTS):
            bad.append(f"{i.name}: layout {layout} but spatial={i.spatial}")
        if layout in SPATIAL_LAYOUTS and len(i.shape) != 3:
            bad.append(f"{i.name}: layout {layout} but canonical shape {i.shape}")
        if layout == "vector" and (len(i.shape) != 1 or tuple(i.native_shape) != tuple(i.shape)):
            bad.append(f"{i.name}: vector with shape {i.shape}, native {i.native_shape}")
        if layout == "other" and tuple(i.shape) != tuple(i.native_shape):
            bad.append(f"{i.name}: other, but shape {i.shape} != native {i.native_shape}")
        if layout != "tokens" and i.prefix_tokens != 0:
            bad.append(f"{i.name}: {layout} with prefix_tokens={i.prefix_tokens}")
        if layout == "tokens":
            c, h, w = i.shape
            if h != w or tuple(i.native_shape) != (h * w + i.prefix_tokens, c):
                bad.append(f"{i.name}: tokens {i.shape} prefix {i.prefix_tokens} vs native {i.native_shape}")
        if layout == "hwc":
            c, h, w = i.shape
            if tuple(i.native_shape) != (h, w, c):
                bad.append(f"{i.name}: hwc {i.shape} vs native {i.native_shape}")
    assert not bad, f"{model_id}: " + "; ".join(bad[:10])


@pytest.mark.parametrize("model_id", list(EXPECTED))
def test_known_layers(model_id):
    from .archspecs import wrapped

    m = wrapped(model_id)
    got, want = [], []
    for name, layout, shape, native, prefix in EXPECTED[model_id]:
        i = m.layer(name)
        want.append((name, layout, shape, native, prefix, layout in SPATIAL_LAYOUTS))
        got.append((name, getattr(i, "layout", None), tuple(i.shape), tuple(getattr(i, "native_shape", ())),
                    getattr(i, "prefix_tokens", None), i.spatial))
    assert got == want


@pytest.mark.parametrize("model_id", ["vit_b_16", "timm_vit_small_patch16_224"])
def test_attention_internals_are_not_spatial(model_id):
    from .archspecs import wrapped

    m = wrapped(model_id)
    others = [i for i in m.layers if i.layout == "other"]
    if model_id == "timm_vit_small_patch16_224":
        assert {"blocks.5.attn.q_norm", "blocks.5.attn.k_norm"} <= {i.name for i in others}
    for i in others:
        assert not i.spatial, i.name
    # the grids of spatial token layers are the patch grid, never a (heads, tokens, dim) reading
    grids = {(i.height, i.width) for i in m.layers if i.layout == "tokens"}
    assert grids == {(14, 14)}, grids


def test_activations_are_canonical(arch):
    """m.activations returns (B, C, H, W) for every spatial layout, equal to the module's own output rearranged."""
    model_id, m = arch
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    names = list(dict.fromkeys([MID_LAYER[model_id]] + [n for n, layout, *_ in EXPECTED[model_id]
                                                         if layout in SPATIAL_LAYOUTS]))
    native = {}
    modules = dict(m.module.named_modules())
    handles = []
    for n in names:
        def hook(_mod, _inp, out, n=n):
            native[n] = (out[0] if isinstance(out, (tuple, list)) else out).detach().clone()
        handles.append(modules[n].register_forward_hook(hook))
    try:
        with torch.no_grad():
            m.module(x)
    finally:
        for h in handles:
            h.remove()
    acts = m.activations(x, names)
    for n in names:
        i = m.layer(n)
        a, raw = acts[n], native[n]
        assert tuple(a.shape) == (2, *i.shape), (n, i.layout, tuple(a.shape))
        if i.layout == "chw":
            expect = raw
        elif i.layout == "hwc":
            expect = raw.permute(0, 3, 1, 2)
        else:  # tokens: drop the prefix tokens, the rest is the row-major patch grid
            c, h, w = i.shape
            expect = raw[:, i.prefix_tokens:].transpose(1, 2).reshape(2, c, h, w)
        torch.testing.assert_close(a, expect, msg=f"{model_id} {n} ({i.layout})")


def test_fixed_size(arch):
    model_id, m = arch
    if model_id in VITS:
        assert m.fixed_size is True
    elif model_id in {"resnet50", "googlenet", "mobilenet_v3_large", "timm_efficientnet_b0", "convnext_tiny",
                      "densenet121"}:
        assert m.fixed_size is False
    else:
        assert m.fixed_size in (True, False)
