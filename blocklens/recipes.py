"""Recipes: the icon and grid presets, the device's default preset, what a recipe costs, and the layers to show first.

Everything that renders (:mod:`~blocklens.iconcache`, precompute, the dataset floor, explain, the app) takes its
recipe from here, so one preset means the same pictures everywhere. A recipe is the full set of render options
an icon's store key is made of (:func:`recipe_for`).
"""
from __future__ import annotations

import hashlib
from typing import Any

from .errors import BlocklensError
from .optvis.render import DEFAULTS

#: Icon and grid recipes. "default" (128 px, 512 steps) is the reference: what a GPU gets, and what the reference
#: pack holds (blocklens/data/pack). "quick" is what a CPU gets: 128 px, 48 steps, coarse-to-fine (the first half of
#: the steps at 64 px), chosen by semantic fidelity per CPU-second (bench/bench_fidelity.py: its icons retrieve their
#: unit's reference icon 92-100% as often as the reference recipe with another seed does, at 1/16 of its cost; the
#: old 56 px quick preset 42-83%). Both use the contrast ramp (each colour channel standardized to a photograph's
#: contrast, blended in over the first half of the steps) and the steeper ``1/f^1.5`` Fourier preconditioning
#: (bench/bench_icon_quality.py); "lucid" is Lucid's recipe unchanged (1/f, no contrast ramp), for comparison.
#: The quick grid draws its cells at the reference's 48 px with 56 steps of 64 cells (about 18 steps a cell on a
#: 14x14 grid): its cells retrieve their position's reference cell 59% of the time (ceiling 84%; the old 40 px,
#: 48-step grid 10%; 64 steps 64%, 80 steps 73%, but a cold explain then takes 60 s or more on two cores, against
#: 56 s; bench/bench_fidelity.py --grid).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"icons": dict(size=128, steps=512, decay_power=1.5, contrast=0.5), "grid": dict(cell=48, steps=256, contrast=0.5),
                "group_counts": (2, 3, 4, 5, 6, 7, 8)},
    "quick": {"icons": dict(size=128, steps=48, decay_power=1.5, contrast=0.5, coarse=0.5),
              "grid": dict(cell=48, steps=56, batch_cells=64, contrast=0.5),
              "group_counts": (3, 4, 5, 6)},
    "lucid": {"icons": dict(size=128, steps=512), "grid": dict(cell=48, steps=256),
              "group_counts": (2, 3, 4, 5, 6, 7, 8)},
}


def preset_summary(name: str) -> str:
    """A preset's icon recipe in a few words: "96 px, 48 steps, coarse-to-fine"."""
    ic = PRESETS[name]["icons"]
    return f"{ic['size']} px, {ic['steps']} steps" + (", coarse-to-fine" if ic.get("coarse") else "")


def presets_help() -> str:
    """The presets in a few words each, for command-line help."""
    return (f"quick: {preset_summary('quick')}; default: {preset_summary('default')} (the reference); lucid: "
            "Lucid's recipe unchanged")


def default_preset(model=None) -> str:
    """The preset for ``model``'s device when none is asked for: "quick" on a CPU, "default" elsewhere (every
    entry point uses it: ``explain``, ``icons``, ``vis``, ``precompute``, ``atlas``, the app)."""
    if model is None:  # no model at hand (precompute's planner): this process's best device
        import torch

        return "default" if torch.cuda.is_available() else "quick"
    device = getattr(model, "device", None)
    return "quick" if device is None or getattr(device, "type", "cpu") == "cpu" else "default"


def icon_cost(recipe: dict) -> float:
    """A recipe's relative cost per icon: steps x pixels of the transformed image (size + 24 of padding); with
    ``coarse``, that share of the steps at half the size."""
    steps, size, coarse = float(recipe.get("steps", 512)), float(recipe.get("size", 128)), recipe.get("coarse")
    if coarse:
        early = round(coarse * steps)
        return early * (max(8, size // 2) + 24) ** 2 + (steps - early) * (size + 24) ** 2
    return steps * (size + 24) ** 2


#: Semantic fidelity measured for a preset (bench/bench_fidelity.py, 2026-12-02): the share of the ceiling's top-1
#: retrieval (the reference recipe with another seed) its icons reach, lowest and highest over the layers measured.
FIDELITY = {"quick": {"low": 0.92, "high": 1.0, "layers": "blocks.7, blocks.11, blocks.7.expand.act, blocks.11.expand.act",
                      "units": 12, "judge": "EfficientNet-Lite2"}}


def fidelity_note(preset: str) -> str:
    """What bench/bench_fidelity.py measured for ``preset``'s icons against the reference ('' if nothing)."""
    f = FIDELITY.get(preset)
    if not f:
        return ""
    return (f"semantic fidelity of the {preset} preset: its icons find their unit's reference icon "
            f"{100 * f['low']:.0f}-{100 * f['high']:.0f}% as often as the reference recipe with another seed does "
            f"({f['units']} units each of {f['layers']} of EfficientNet-Lite0, judged by {f['judge']}; "
            "bench/bench_fidelity.py)")


def preset_note(preset: str, seconds: float | None = None, n_icons: int | None = None,
                recipe: dict | None = None) -> str:
    """Which recipe made the icons (``recipe``: the icon recipe used, default the preset's) and what the default
    preset would cost on this device, scaled from the measured ``seconds`` for ``n_icons`` by :func:`icon_cost`."""
    ic = {**PRESETS[preset]["icons"], **(recipe or {})}
    custom = "" if ic == PRESETS[preset]["icons"] else ", changed"
    c2f = ", coarse-to-fine" if ic.get("coarse") else ""
    note = f"icons: {preset} preset ({ic['size']} px, {ic['steps']} steps{c2f}{custom})"
    ref = PRESETS["default"]["icons"]
    if ic != ref and seconds and n_icons:
        est = seconds * icon_cost(ref) / icon_cost(ic)
        when = f"{est / 60:.0f} min" if est >= 90 else f"{est:.0f} s"
        note += (f"; the default preset ({ref['size']} px, {ref['steps']} steps) would take about {when} for "
                 f"these {n_icons} icons on this device (preset 'default')")
    if ic == PRESETS[preset]["icons"] and fidelity_note(preset):
        note += f"; {fidelity_note(preset)}"
    return note


def recipe_preset(recipe: dict | None) -> str:
    """The preset whose icon recipe ``recipe`` is ("custom" when it is none of them)."""
    if recipe:
        for name, preset in PRESETS.items():
            if recipe_for(**preset["icons"]) == recipe:
                return name
    return "custom"


_SOURCE_WORDS = {"pack": "from the reference pack", "store": "from your store", "rendered": "rendered now"}


def sources_line(sources: dict) -> str:
    """One line saying where icons came from (see :attr:`~blocklens.explain.Explanation.sources`): "channel
    icons: 112 from the reference pack (default preset), 4 rendered now (quick preset); directions: ..."."""
    parts = []
    for kind, counts in sources.items():
        if not counts:
            continue
        bits = []
        for label, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            source, _, preset = label.partition(" ")
            how = "a custom recipe" if preset == "custom" else f"{preset} preset"
            bits.append(f"{n} {_SOURCE_WORDS.get(source, source)} ({how})")
        parts.append(f"{'channel icons' if kind == 'channels' else kind}: {', '.join(bits)}")
    return "; ".join(parts)


RECIPE_KEYS = ("size", "steps", "lr", "seed", "param", "decorrelate", "transforms", "rescue_steps", "through_cap",
               "decay_power", "contrast", "coarse", "amp")


#: Options added after the first icon stores were written: part of a recipe (and its key) only when set, so that
#: every recipe without them keeps its key (the reference pack's, the user's stores).
OPTIONAL_KEYS = ("coarse", "amp")


def recipe_for(**overrides) -> dict:
    """The full recipe (render defaults with ``overrides``) that icon keys are made of."""
    unknown = set(overrides) - set(RECIPE_KEYS)
    if unknown:
        raise BlocklensError(f"unknown recipe option(s) {sorted(unknown)}; valid: {', '.join(RECIPE_KEYS)}")
    recipe = {k: DEFAULTS[k] for k in RECIPE_KEYS if k not in OPTIONAL_KEYS}
    recipe.update({k: v for k, v in overrides.items() if v is not None})
    return recipe


def preset_options(preset: str | None = None, part: str = "icons", model=None, **overrides) -> dict:
    """A preset's options for ``part`` (``"icons"`` or ``"grid"``) with ``overrides`` on top (``None`` values
    left out): the one merge every entry point uses. ``preset`` None: :func:`default_preset` for ``model``."""
    name = preset or default_preset(model)
    if name not in PRESETS:
        raise BlocklensError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    if part not in ("icons", "grid"):
        raise BlocklensError(f"unknown recipe part {part!r}; valid: icons, grid")
    return {**PRESETS[name][part], **{k: v for k, v in overrides.items() if v is not None}}


def icon_recipe(preset: str | None = None, model=None, **overrides) -> dict:
    """The full icon recipe (what icon keys are made of) of ``preset`` (default: the device's, see
    :func:`default_preset`) with ``overrides``: ``recipe_for(**preset_options(preset, "icons", model, **overrides))``."""
    return recipe_for(**preset_options(preset, "icons", model, **overrides))


DEFAULT_LAYERS = {"efficientnet_lite0": ["blocks.7", "blocks.11"], "efficientnet_lite1": ["blocks.10", "blocks.16"],
                  "efficientnet_lite2": ["blocks.10", "blocks.16"]}

#: :func:`architecture_key` of each zoo model: a model built on one (fine-tuned, a new head, other labels) has the
#: same spatial layers and gets the zoo's default layers (a Lite0 with a two-class head: blocks.11 for class concepts
#: and the dictionary, not the blocks.13 that the generic rule picks; bench/bench_default_layer.py).
ARCHITECTURES = {"3376bc9d0e3d3b15": "efficientnet_lite0", "4d0c8cf416ad2a43": "efficientnet_lite1",
                 "0c72b182d92aba74": "efficientnet_lite2"}


def architecture_key(model) -> str:
    """A digest of the model's spatial layers (name, type, shape, in forward order): equal for two models of one
    architecture at one input size whatever their weights or classifier."""
    text = "\n".join(f"{i.name} {i.type} {tuple(i.shape)}" for i in model.layers if i.spatial)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def zoo_architecture(model) -> str | None:
    """The zoo model ``model`` is (by name) or is built on (by :func:`architecture_key`), else None."""
    if model.name in DEFAULT_LAYERS:
        return model.name
    return ARCHITECTURES.get(architecture_key(model))


#: Default layers have a grid of this many positions a side (smaller grids say little about where; larger ones
#: cost more than a first look is worth, see :data:`~blocklens.analyses.common.MAX_POSITIONS`).
GRID_SIDES = (7, 28)


def layer_candidates(model) -> list:
    """Spatial layers worth a first look, in forward order: block outputs with a grid of :data:`GRID_SIDES`
    positions a side, called once per forward; failing that, any spatial layer with such a grid; failing that,
    any spatial layer. A block is a module with submodules that is no plain container itself, whose parent is a
    ``Sequential`` / ``ModuleList`` / ``ModuleDict`` (a stage) or the model, and that sits inside no other block:
    ResNet's ``layer3.2``, GoogLeNet's ``inception4c``, DenseNet's ``features.denseblock3`` and
    ``features.transition2``; where that leaves fewer than three, the innermost such modules (torchvision ViT's
    ``encoder.layers.encoder_layer_5`` rather than its one ``encoder``).

    A plain container only holds its modules: torch's own ``Sequential`` / ``ModuleList`` / ``ModuleDict``, or a
    subclass that keeps their forward and holds blocks (torchvision RegNet's ``AnyStage``) or cannot be called. A
    subclass with a forward of its own (DenseNet's ``_DenseBlock``, a ``ModuleDict`` that concatenates its
    layers' outputs), or a ``Sequential`` subclass of single layers (DenseNet's ``_Transition``, torchvision's
    ``Conv2dNormActivation``), is a block of its own."""
    from torch import nn

    modules = dict(model.module.named_modules())
    stage = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

    def has_children(mod) -> bool:
        return any(True for _ in mod.children())

    def plain(mod) -> bool:
        if not isinstance(mod, stage):
            return False
        if type(mod) in stage:
            return True
        base = next(b for b in stage if isinstance(mod, b))
        if type(mod).forward is not base.forward:  # a forward of its own: a block
            return False
        # a Sequential subclass of single layers (conv, norm, activation) is a block; one of blocks, a stage
        return not isinstance(mod, nn.Sequential) or any(has_children(c) for c in mod.children())

    def block_like(path: str) -> bool:
        mod = modules.get(path)
        if not path or mod is None or plain(mod) or not has_children(mod):
            return False
        parent = path.rpartition(".")[0]
        return parent == "" or isinstance(modules.get(parent), stage)

    def is_block(path: str) -> bool:
        parts = path.split(".")
        return block_like(path) and not any(block_like(".".join(parts[:k])) for k in range(1, len(parts)))

    lo, hi = GRID_SIDES
    sized = [i for i in model.layers if i.spatial and lo <= min(i.height, i.width) and max(i.height, i.width) <= hi]
    once = [i for i in sized if i.calls == 1 and i.index in (None, 0)]
    blocks = [i for i in once if is_block(i.module)]
    if len(blocks) < 3:  # one big block (torchvision ViT's `encoder`): its own blocks instead, the innermost ones
        inner = [i for i in once if block_like(i.module)]
        blocks = [i for i in inner if not any(j.module.startswith(i.module + ".") for j in inner)] or blocks
    return blocks or sized or [i for i in model.layers if i.spatial]


def default_layers(model) -> list[str]:
    """Two spatial layers for a first look: the zoo's choice (also for a model built on a zoo architecture,
    :func:`zoo_architecture`), else the :func:`layer_candidates` at 1/2 and 3/4 of the depth."""
    zoo = zoo_architecture(model)
    if zoo is not None:
        return list(DEFAULT_LAYERS[zoo])
    candidates = layer_candidates(model)
    if not candidates:
        kinds = sorted({i.layout for i in model.layers})
        raise BlocklensError(f"model {model.name!r} has no layer with positions to explain (its layers' layouts: "
                             f"{', '.join(kinds)}); 'blocklens layers' lists them")
    picks = [candidates[len(candidates) // 2], candidates[(3 * len(candidates)) // 4]]
    return list(dict.fromkeys(i.name for i in picks))


def concept_layer(model) -> str:
    """The default layer of class concepts and of the concept dictionary: the deeper of :func:`default_layers`.
    For Lite0 (and heads on it) that is blocks.11, chosen over blocks.9, 13 and 15 on heads planted on three marks:
    its first concept lay on the mark for all three and removing it flipped 83-96% of the marked class, and the
    dictionary found an atom on two of the three (bench/bench_default_layer.py, README)."""
    return default_layers(model)[-1]
