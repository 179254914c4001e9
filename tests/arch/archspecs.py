"""The real architectures of tests/arch (and bench/bench_architectures.py): how to build each one, randomly
initialised with a fixed seed (nothing downloads weights), and what blocklens should say about a few of its
layers at 224 px.

``EXPECTED[model]`` lists ``(layer, layout, canonical shape, native shape, prefix tokens)``; the shapes were read
off the modules' real outputs (torchvision 0.29.1, timm 1.0.29). ``native`` is the module's output without the
batch dimension; the canonical shape is ``(C, H, W)`` for chw / hwc / tokens, ``(C,)`` for vector, the native
shape for other.
"""
from __future__ import annotations

import functools

import torch

# model id -> (library, name, constructor keywords)
SPECS: dict[str, tuple[str, str, dict]] = {
    "resnet50": ("torchvision", "resnet50", {}),
    # the article's InceptionV1; without weights torchvision would build the aux heads and warn about init
    "googlenet": ("torchvision", "googlenet", {"aux_logits": False, "init_weights": True}),
    "mobilenet_v3_large": ("torchvision", "mobilenet_v3_large", {}),
    "convnext_tiny": ("torchvision", "convnext_tiny", {}),
    "vit_b_16": ("torchvision", "vit_b_16", {}),
    "swin_t": ("torchvision", "swin_t", {}),
    # dense blocks (a ModuleDict with a forward that concatenates its layers' outputs) between transitions
    "densenet121": ("torchvision", "densenet121", {}),
    "timm_efficientnet_b0": ("timm", "efficientnet_b0", {}),
    "timm_vit_small_patch16_224": ("timm", "vit_small_patch16_224", {}),
}
MODELS = list(SPECS)
VITS = {"vit_b_16", "timm_vit_small_patch16_224"}  # accept only 224x224 inputs

EXPECTED: dict[str, list[tuple[str, str, tuple, tuple, int]]] = {
    "resnet50": [
        ("layer1.0", "chw", (256, 56, 56), (256, 56, 56), 0),
        ("layer3.2", "chw", (1024, 14, 14), (1024, 14, 14), 0),
        ("layer4.2", "chw", (2048, 7, 7), (2048, 7, 7), 0),
        ("fc", "vector", (1000,), (1000,), 0),
    ],
    "googlenet": [
        ("inception3a", "chw", (256, 28, 28), (256, 28, 28), 0),
        ("inception4c", "chw", (512, 14, 14), (512, 14, 14), 0),
        ("inception5b", "chw", (1024, 7, 7), (1024, 7, 7), 0),
        ("fc", "vector", (1000,), (1000,), 0),
    ],
    "mobilenet_v3_large": [
        ("features.4", "chw", (40, 28, 28), (40, 28, 28), 0),
        ("features.12", "chw", (112, 14, 14), (112, 14, 14), 0),
        ("features.16", "chw", (960, 7, 7), (960, 7, 7), 0),
        ("classifier.0", "vector", (1280,), (1280,), 0),
    ],
    "convnext_tiny": [
        # CNBlock: dwconv, Permute to (H, W, C), LayerNorm, MLP, Permute back
        ("features.1.0.block.2", "hwc", (96, 56, 56), (56, 56, 96), 0),
        ("features.1.0", "chw", (96, 56, 56), (96, 56, 56), 0),
        ("features.5.2.block.2", "hwc", (384, 14, 14), (14, 14, 384), 0),
        ("features.5", "chw", (384, 14, 14), (384, 14, 14), 0),
        ("classifier.2", "vector", (1000,), (1000,), 0),
    ],
    "vit_b_16": [
        ("conv_proj", "chw", (768, 14, 14), (768, 14, 14), 0),
        ("encoder.layers.encoder_layer_5", "tokens", (768, 14, 14), (197, 768), 1),
        ("encoder.ln", "tokens", (768, 14, 14), (197, 768), 1),
        ("heads.head", "vector", (1000,), (1000,), 0),
    ],
    "swin_t": [
        ("features.0", "hwc", (96, 56, 56), (56, 56, 96), 0),
        ("features.1.0", "hwc", (96, 56, 56), (56, 56, 96), 0),
        ("features.5", "hwc", (384, 14, 14), (14, 14, 384), 0),
        ("permute", "chw", (768, 7, 7), (768, 7, 7), 0),
        ("head", "vector", (1000,), (1000,), 0),
    ],
    "densenet121": [
        ("features.denseblock2", "chw", (512, 28, 28), (512, 28, 28), 0),
        ("features.transition2", "chw", (256, 14, 14), (256, 14, 14), 0),
        ("features.denseblock3", "chw", (1024, 14, 14), (1024, 14, 14), 0),
        ("features.denseblock3.denselayer15", "chw", (32, 14, 14), (32, 14, 14), 0),  # 32 new channels
        ("features.norm5", "chw", (1024, 7, 7), (1024, 7, 7), 0),
        ("classifier", "vector", (1000,), (1000,), 0),
    ],
    "timm_efficientnet_b0": [
        ("blocks.2", "chw", (40, 28, 28), (40, 28, 28), 0),
        ("blocks.3", "chw", (80, 14, 14), (80, 14, 14), 0),
        ("conv_head", "chw", (1280, 7, 7), (1280, 7, 7), 0),
        ("classifier", "vector", (1000,), (1000,), 0),
    ],
    "timm_vit_small_patch16_224": [
        ("patch_embed.proj", "chw", (384, 14, 14), (384, 14, 14), 0),
        ("patch_embed", "tokens", (384, 14, 14), (196, 384), 0),  # before the CLS token is prepended
        ("blocks.5", "tokens", (384, 14, 14), (197, 384), 1),
        # attention internals: per-head queries (heads, tokens, head dim); listed, never spatial
        ("blocks.5.attn.q_norm", "other", (6, 197, 64), (6, 197, 64), 0),
        ("blocks.5.attn.k_norm", "other", (6, 197, 64), (6, 197, 64), 0),
        ("head", "vector", (1000,), (1000,), 0),
    ],
}

# a spatial layer per model for rendering, hooks and activations (mid-depth, 14x14)
MID_LAYER = {"resnet50": "layer3.2", "googlenet": "inception4c", "mobilenet_v3_large": "features.12",
             "convnext_tiny": "features.5.2.block.2", "vit_b_16": "encoder.layers.encoder_layer_5",
             "swin_t": "features.5", "densenet121": "features.denseblock3", "timm_efficientnet_b0": "blocks.3",
             "timm_vit_small_patch16_224": "blocks.5"}

# (source, target) for layer-to-layer spatial attribution whose target has 56x56 = 3136 positions
TOO_MANY_POSITIONS = {"resnet50": ("layer1.0", "layer1.2"), "swin_t": ("features.0", "features.1.1")}

LAYOUTS = ("chw", "hwc", "tokens", "vector", "other")
SPATIAL_LAYOUTS = ("chw", "hwc", "tokens")


def build_net(model_id: str) -> torch.nn.Module:
    """The randomly initialised module (``torch.manual_seed(0)`` first), in eval mode."""
    library, name, kw = SPECS[model_id]
    torch.manual_seed(0)
    if library == "timm":
        import timm

        net = timm.create_model(name, pretrained=False, **kw)
    else:
        import torchvision

        net = torchvision.models.get_model(name, weights=None, **kw)
    return net.eval()


@functools.lru_cache(maxsize=None)
def wrapped(model_id: str):
    """``bl.wrap(net, labels="imagenet", input_size=224)``, built once per process (treat it as read-only)."""
    import blocklens as bl

    return bl.wrap(build_net(model_id), labels="imagenet", input_size=224, name=model_id)


def hook_counts(module: torch.nn.Module) -> dict[str, int]:
    """Hooks registered on ``module`` and every submodule, by kind (and the global module hooks)."""
    from torch.nn.modules import module as nn_module

    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    counts = {k: sum(len(getattr(m, k, {}) or {}) for m in module.modules()) for k in kinds}
    counts["global"] = sum(len(getattr(nn_module, g, {}) or {}) for g in
                           ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                            "_global_backward_pre_hooks"))
    return counts


def total_hooks(module: torch.nn.Module) -> int:
    return sum(hook_counts(module).values())
