"""``explain``: every building block for one image, in one object -- the input of the interfaces.

For an image, a model and a few layers, :func:`explain` computes

- the top predictions, and the class pair to contrast (the top two by default);
- per layer: the semantic dictionary; channel attribution for each top class (linear, so any pair's
  attribution is the difference of two rows: the interfaces switch pairs without a round trip) and for the
  pair; spatial attribution maps to each top class; neuron groups with their attribution to the top classes;
  optionally the activation grid;
- between consecutive layers: layer-to-layer spatial attribution and group-to-group flows;
- the icons of every channel and group direction shown, through the icon store.

``Explanation.to_json()`` is plain JSON with icons referred to by store key; ``save(folder)`` writes it with the
picture and every icon as PNG files. Presets set the icon recipe: ``"default"`` is the reference (128 px,
512 steps), ``"quick"`` a small one for a first look on a CPU.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from .analyses.attribution import (ChannelAttribution, SpatialAttribution, channel_result, class_gradients,
                                   spatial_attribution)
from .analyses.common import prepare, spatial_layer, to_jsonable
from .analyses.dictionary import SemanticDictionary, semantic_dictionary
from .analyses.groups import NeuronGroups, group_attribution, neuron_groups
from .errors import BlocklensError
from .iconcache import icons as get_icons
from .store import Icon, IconStore

PRESETS: dict[str, dict[str, Any]] = {
    "default": {"icons": dict(size=128, steps=512), "grid": dict(cell=48, steps=256)},
    "quick": {"icons": dict(size=64, steps=64), "grid": dict(cell=40, steps=48)},
}
DEFAULT_LAYERS = {"efficientnet_lite0": ["blocks.7", "blocks.11"], "efficientnet_lite1": ["blocks.10", "blocks.16"],
                  "efficientnet_lite2": ["blocks.10", "blocks.16"]}


def default_layers(model) -> list[str]:
    """Two spatial layers for a first look: the zoo's choice, else the spatial layers at 1/2 and 3/4 depth."""
    if model.name in DEFAULT_LAYERS:
        return list(DEFAULT_LAYERS[model.name])
    spatial = [i.name for i in model.layers if i.spatial and i.calls == 1 and "." not in i.name.split(".")[-1]]
    spatial = spatial or [i.name for i in model.layers if i.spatial]
    if not spatial:
        raise BlocklensError(f"model {model.name!r} has no layer with positions (C, H, W) to explain")
    picks = [spatial[len(spatial) // 2], spatial[(3 * len(spatial)) // 4]]
    return list(dict.fromkeys(picks))


@dataclass
class LayerExplanation:
    layer: str
    shape: tuple[int, ...]
    dictionary: SemanticDictionary
    attribution: dict[int, ChannelAttribution]  # per top class
    pair: ChannelAttribution
    spatial: dict[int, SpatialAttribution]  # per top class
    groups: NeuronGroups
    grid: Any | None = None

    def to_json(self) -> dict:
        return {
            "layer": self.layer, "shape": list(self.shape),
            "dictionary": self.dictionary.to_json(),
            "attribution": {str(c): to_jsonable(a.values) for c, a in self.attribution.items()},
            "pair": self.pair.to_json(),
            "spatial": {str(c): to_jsonable(s.maps) for c, s in self.spatial.items()},
            "groups": self.groups.to_json(),
            "grid": (dict(self.grid.to_json(image=False), file=f"grid_{self.layer}.png")
                     if self.grid is not None else None),
        }


@dataclass
class Explanation:
    """All blocks for one image. ``layers`` in forward order; ``flows[i]`` connects layer i to layer i+1."""

    model: str
    fingerprint: str
    image_sha: str
    crop: Image.Image | None
    predictions: list[dict]
    classes: list[int]
    pair: tuple[int, int]
    layers: list[LayerExplanation]
    flows: list[dict] = field(default_factory=list)
    icons: dict[str, Icon] = field(default_factory=dict)
    preset: str = "default"
    timings: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        top = self.predictions[0]
        return (f"<Explanation {self.model}: {top['label']} {top['prob']:.2f}; layers "
                f"{', '.join(l.layer for l in self.layers)}; {len(self.icons)} icons>")

    def layer(self, name: str) -> LayerExplanation:
        for l in self.layers:
            if l.layer == name:
                return l
        raise BlocklensError(f"layer {name!r} is not in this explanation; it has "
                             f"{', '.join(l.layer for l in self.layers)}")

    def to_json(self) -> dict:
        return {
            "model": self.model, "fingerprint": self.fingerprint, "image_sha": self.image_sha,
            "preset": self.preset, "predictions": self.predictions, "classes": self.classes,
            "labels": {str(c): p["label"] for c, p in zip(self.classes, self.predictions)},
            "pair": list(self.pair), "layers": [l.to_json() for l in self.layers], "flows": to_jsonable(self.flows),
            "icons": {k: {"layer": i.meta.get("layer"), "unit": i.meta.get("unit"), "label": i.meta.get("label"),
                          "file": f"icons/{k}.png"} for k, i in self.icons.items()},
            "timings": to_jsonable(self.timings),
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``explanation.json``, ``image.png`` and ``icons/<key>.png``; returns the JSON path."""
        folder = Path(folder)
        (folder / "icons").mkdir(parents=True, exist_ok=True)
        if self.crop is not None:
            self.crop.save(folder / "image.png")
        for key, icon in self.icons.items():
            icon.to_pil().save(folder / "icons" / f"{key}.png")
        for l in self.layers:
            if l.grid is not None:
                l.grid.image().save(folder / f"grid_{l.layer}.png")
                l.grid.image(magnitude=True).save(folder / f"grid_{l.layer}_magnitude.png")
        path = folder / "explanation.json"
        path.write_text(json.dumps(self.to_json()))
        return path


def _image_sha(x) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def explain(image, model="efficientnet_lite0", layers: Sequence[str] | None = None, classes: Sequence | None = None,
            *, top: int = 5, n_groups: int = 6, grids: bool = True, icons: bool = True, preset: str = "default",
            icon_recipe: dict | None = None, grid_recipe: dict | None = None,
            store: IconStore | str | None | bool = None, progress: bool | None = None) -> Explanation:
    """Every building block for ``image``. ``model``: a Model or a zoo name; ``layers``: spatial layers (default:
    two per model, :func:`default_layers`); ``classes``: the classes to explain (default: the top ``top``
    predictions), the first two form the contrasted pair. ``preset`` sets the icon and grid recipes;
    ``icon_recipe`` / ``grid_recipe`` override single settings of it."""
    from .models import Model, load_model

    if preset not in PRESETS:
        raise BlocklensError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    recipe = {"icons": {**PRESETS[preset]["icons"], **(icon_recipe or {})},
              "grid": {**PRESETS[preset]["grid"], **(grid_recipe or {})}}
    model = model if isinstance(model, Model) else load_model(model)
    if store is not False and not isinstance(store, IconStore):
        store = IconStore(store)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    prep = prepare(model, image)
    names = [spatial_layer(model, l, "explain").name for l in (layers or default_layers(model))]
    names = sorted(dict.fromkeys(names), key=lambda n: model.layer(n).order)
    ranked = model.predict(prep.x, top=len(model.labels))  # every class, most probable first: one forward
    cls = [model.class_index(c) for c in classes] if classes else [p.index for p in ranked[:top]]
    if len(cls) < 2:
        raise BlocklensError("explain needs at least two classes (the first two are contrasted)")
    probs = {p.index: p.prob for p in ranked}
    predictions = [{"index": c, "label": model.labels[c], "prob": probs[c]} for c in cls]
    times["predict"] = time.perf_counter() - t0

    layer_results = []
    for name in names:
        t = time.perf_counter()
        dictionary = semantic_dictionary(model, prep, name)
        act, grads, logits = class_gradients(model, prep.x, name, cls)  # linear: one pass for all classes
        products = act.unsqueeze(0) * grads
        per_class = {c: channel_result(model, name, [c], "linear", products[k], float(logits[k]))
                     for k, c in enumerate(cls)}
        pair = channel_result(model, name, cls[:2], "linear", products[0] - products[1],
                              float(logits[0] - logits[1]))
        spatial = {c: SpatialAttribution(name, model.labels[c], "class", "linear",
                                         products[k].sum(0).double().cpu().numpy(), 1, [c])
                   for k, c in enumerate(cls)}
        groups = neuron_groups(model, prep, name, n_groups=min(n_groups, model.layer(name).channels), classes=cls)
        layer_results.append(LayerExplanation(name, model.layer(name).shape, dictionary, per_class, pair, spatial,
                                              groups))
        times[f"analyses {name}"] = time.perf_counter() - t

    flows = []
    for a, b in zip(layer_results, layer_results[1:]):
        t = time.perf_counter()
        l2l = spatial_attribution(model, prep, a.layer, b.layer)
        flows.append({"from": a.layer, "to": b.layer, "spatial_scale": l2l.scale, "spatial": l2l.maps,
                      "groups": group_attribution(model, prep, a.groups, b.groups)})
        times[f"flow {a.layer}->{b.layer}"] = time.perf_counter() - t

    result = Explanation(model.name, model.fingerprint, _image_sha(prep.x), prep.crop, predictions, cls,
                         (cls[0], cls[1]), layer_results, flows, preset=preset)
    if icons:
        t = time.perf_counter()
        _attach_icons(model, result, store, recipe["icons"], progress)
        times["icons"] = time.perf_counter() - t
    if grids:
        t = time.perf_counter()
        for lr in layer_results:
            lr.grid = cached_grid(model, prep, lr.layer, store, progress=progress, **recipe["grid"])
        times["grids"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    result.timings = times
    return result


def _attach_icons(model, result: Explanation, store, recipe: dict, progress) -> None:
    """Icons for every channel the views show (dictionary entries, top attributed channels) and every group
    direction, one store lookup each and batched renders for what is missing."""
    from .optvis.targets import channel_target, direction_target

    for lr in result.layers:
        wanted = list(lr.dictionary.used_channels)
        for a in [*lr.attribution.values(), lr.pair]:
            wanted += [c for c, _ in a.positive + a.negative]
        wanted = list(dict.fromkeys(wanted))
        targets = [channel_target(model, lr.layer, c) for c in wanted]
        targets += [direction_target(model, lr.layer, v) for v in lr.groups.channel]
        got = get_icons(model, targets, store=store, progress=progress, **recipe)
        by_channel = dict(zip(wanted, got[:len(wanted)]))
        lr.dictionary.icons = {c: by_channel[c] for c in lr.dictionary.used_channels}
        for a in [*lr.attribution.values(), lr.pair]:
            a.icons = {c: by_channel[c] for c, _ in a.positive + a.negative}
        lr.groups.icons = got[len(wanted):]
        for icon in got:
            result.icons[icon.key] = icon


def cached_grid(model, prep, layer: str, store, progress=None, **grid_recipe):
    """The activation grid of ``layer`` for this image, from the store when it was computed before."""
    from .analyses.grid import ActivationGrid, activation_grid

    if store is False:
        return activation_grid(model, prep, layer, progress=progress, **grid_recipe)
    from .store import icon_key

    key = icon_key(model.fingerprint, layer, f"grid:{_image_sha(prep.x)}", dict(grid_recipe))
    icon = store.get(key)
    if icon is not None and "grid" in icon.meta:
        return ActivationGrid.from_stored(icon.image, icon.meta["grid"])
    grid = activation_grid(model, prep, layer, progress=progress, **grid_recipe)
    pixels, meta = grid.to_stored()
    store.put(key, pixels, {"grid": meta, "layer": layer, "unit": "grid"})
    return grid
