"""``explain``: every building block for one image, in one object -- the input of the interfaces.

For an image, a model and a few layers, :func:`explain` computes

- the top predictions, and the class pair to contrast (the top two by default);
- per layer: the semantic dictionary; channel attribution for each top class (linear, so any pair's
  attribution is the difference of two rows: the interfaces switch pairs without a round trip) and for the
  pair; spatial attribution maps to each top class; neuron groups with their attribution to the top classes;
  optionally the activation grid;
- between consecutive layers: layer-to-layer spatial attribution and group-to-group flows;
- neuron groups for several group counts (the interfaces' slider), with group-to-group flows for each;
- the icons of every channel and group direction shown, through the icon store;
- with a concept dictionary (``dictionary=``, :mod:`blocklens.dataset.dictionary`): the image read in its atoms at
  its layer (:mod:`.analyses.atoms`), the atoms' icons taken from the store.

Numbers and pictures are separate steps: ``explain(..., icons=False, grids=False)`` takes seconds and already
knows the store key of every icon it will show (``icon_index``); :func:`finish` renders what the store lacks.
``icons="cached"`` / ``grids="cached"`` take only what the store already has.

``Explanation.to_json()`` is plain JSON with icons referred to by store key; ``save(folder)`` writes it with the
picture and every icon as PNG files; ``to_html()`` / ``save_html()`` give the self-contained report, and in a
notebook the explanation shows itself with the same views. Presets set the icon recipe: ``"default"`` is the
reference (128 px, 512 steps), ``"quick"`` (128 px, 48 steps, coarse-to-fine) the one a CPU gets; on the embedded
model the channel icons of the default layers come from the reference pack, so a cold explanation renders only
its group directions and grids (about 56 s on two cores).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from PIL import Image

from .analyses.attribution import (ChannelAttribution, LayerGradients, SpatialAttribution, channel_result,
                                   class_gradients, class_path_gradients, spatial_attribution)
from .analyses.common import prepare, spatial_layer, to_jsonable
from .analyses.dictionary import SemanticDictionary, semantic_dictionary
from .analyses.groups import NeuronGroups, group_attribution, neuron_groups
from .errors import BlocklensError
from .iconcache import icon_key_for, icons as get_icons
from .recipes import (PRESETS, default_layers, default_preset, icon_recipe as preset_icon_recipe, preset_note,
                      preset_options, recipe_for, recipe_preset, sources_line)
from .store import Icon, IconStore, icon_key

if TYPE_CHECKING:
    from .analyses.atoms import AtomAttribution

ICON_BATCH = 16  # icons rendered together: on a 2-core CPU 16 costs ~7% less per icon than 8
PAIR_TOP = 8  # channels shown on each side of a class pair: every ordered pair's top channels get icons
#: How the shown numbers are computed, chosen by measurement (bench/bench_faithfulness.py, docs/faithfulness.md):
#: the score each class's numbers explain, and the method per view (channels: one backward pass; spatial maps:
#: the path from zero, ``spatial_steps`` midpoint steps, every class in one batch; groups and group-to-group
#: flows: the measured effect of removing each group, k passes from the layer).
ATTRIBUTION = {"score": "logprob", "channels": "linear", "spatial": "path", "spatial_steps": 16,
               "groups": "ablation"}


@dataclass
class LayerExplanation:
    layer: str
    shape: tuple[int, ...]
    dictionary: SemanticDictionary
    attribution: dict[int, ChannelAttribution]  # per top class
    pair: ChannelAttribution
    spatial: dict[int, SpatialAttribution]  # per top class
    groups: NeuronGroups  # the default group count
    activations: Any = None  # (C, H, W) float32 numpy
    group_options: dict[int, NeuronGroups] = field(default_factory=dict)  # every group count on the slider
    grid: Any | None = None
    grid_key: str | None = None
    faithfulness: dict | None = None  # faithfulness.layer_report for the top class: figures and one line per view
    methods: dict = field(default_factory=dict)  # {"score", "channels", "spatial", "groups"} as computed

    def shown_channels(self, pair_top: int = PAIR_TOP) -> list[int]:
        """Every channel a view can show: the dictionary's, and the top channels on both sides of every pair
        of the explained classes (the interfaces switch pairs without a round trip)."""
        wanted = list(self.dictionary.used_channels)
        rows = {c: a.values for c, a in self.attribution.items()}
        for a in rows:
            for b in rows:
                if a != b:
                    wanted += [int(i) for i in (rows[a] - rows[b]).argsort()[::-1][:pair_top]]
        for a in [*self.attribution.values(), self.pair]:
            wanted += [c for c, _ in a.positive + a.negative]
        return list(dict.fromkeys(wanted))

    def to_json(self) -> dict:
        return {
            "layer": self.layer, "shape": list(self.shape),
            "dictionary": self.dictionary.to_json(),
            "attribution": {str(c): to_jsonable(a.values) for c, a in self.attribution.items()},
            "pair": self.pair.to_json(),
            "spatial": {str(c): to_jsonable(s.maps) for c, s in self.spatial.items()},
            "groups": self.groups.to_json(),
            "methods": self.methods, "faithfulness": self.faithfulness,
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
    recipe: dict = field(default_factory=dict)  # {"icons": ..., "grid": ...} as used
    icon_index: dict = field(default_factory=dict)  # layer -> {"channels": {c: key}, "groups": {k: [key]}}
    n_groups: int = 6
    #: layer -> {"summary": IconQuality.summary(), "line": one line, "icons": {key: per-icon figures}} of the
    #: layer's channel icons (see :mod:`blocklens.quality`), filled in by :func:`finish`
    quality: dict = field(default_factory=dict)
    rendered: int = 0  # icons rendered (not found in the store) by finish()
    #: with ``dictionary=``: the image read in the dictionary's atoms at its layer (:mod:`.analyses.atoms`), and
    #: what the views show of the dictionary itself (:func:`_dictionary_info`)
    atoms: AtomAttribution | None = None
    atoms_dictionary: dict | None = None

    @property
    def note(self) -> str:
        """Which recipe made the icons, where they came from, and what the reference recipe would cost here."""
        if self.preset not in PRESETS:
            return ""
        note = preset_note(self.preset, self.timings.get("icons"), self.rendered, self.recipe.get("icons"))
        where = sources_line(self.sources)
        return f"{note}. {where}" if where else note

    @property
    def sources(self) -> dict:
        """Where the icons held came from: ``{"channels": {source: n}, "directions": {source: n}}``, a source
        being ``"pack"`` (the reference pack), ``"store"`` (the user's store) or ``"rendered"`` (just now), each
        split by the preset whose recipe made it (``"pack default"``, ``"rendered quick"``...)."""
        out: dict = {"channels": {}, "directions": {}}
        for idx in self.icon_index.values():
            kinds = (("channels", list(idx["channels"].values())),
                     ("directions", [k for ks in idx["groups"].values() for k in ks]))
            for kind, keys in kinds:
                for k in dict.fromkeys(keys):
                    icon = self.icons.get(k)
                    if icon is not None:
                        label = f"{icon.source} {recipe_preset(icon.meta.get('recipe'))}"
                        out[kind][label] = out[kind].get(label, 0) + 1
        return out

    @property
    def missing(self) -> list[str]:
        """Store keys of icons and grids the views show but this explanation does not hold yet (icons in render
        order: per layer, its channels then its group directions; grids last)."""
        keys = []
        for idx in self.icon_index.values():
            keys += list(idx["channels"].values()) + [k for ks in idx["groups"].values() for k in ks]
        keys = [k for k in dict.fromkeys(keys) if k not in self.icons]
        return keys + [l.grid_key for l in self.layers if l.grid is None and l.grid_key]

    def to_html(self, **kw) -> str:
        """The self-contained HTML report (data and pictures inline; works from file:// with no network)."""
        from .web.report import report_html

        return report_html(self, **kw)

    def save_html(self, path: str | Path, **kw) -> Path:
        from .web.report import save_report

        return save_report(self, path, **kw)

    def _repr_html_(self) -> str:
        from .web.notebook import notebook_html

        return notebook_html(self)

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
            "timings": to_jsonable(self.timings), "quality": to_jsonable(self.quality), "note": self.note,
            "sources": self.sources,
            **({"atoms": self.atoms_json()} if self.atoms is not None else {}),
        }

    def atoms_json(self) -> dict:
        """The atoms section: :meth:`~.analyses.atoms.AtomAttribution.to_json` with the dictionary's key, model,
        folder and, per atom shown, its icon key, coverage, top drives and flags."""
        return dict(self.atoms.to_json(), dictionary=self.atoms_dictionary)

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
            *, top: int = 5, n_groups: int = 6, group_counts: Sequence[int] | None = None,
            grids: bool | str = True, icons: bool | str = True, preset: str | None = None,
            icon_recipe: dict | None = None, grid_recipe: dict | None = None,
            store: IconStore | str | None | bool = None, progress: bool | None = None,
            score: str | None = None, group_method: str | None = None, faithfulness: bool = True,
            reference_icons: bool = True, device: str | None = None, dictionary=None) -> Explanation:
    """Every building block for ``image``. ``model``: a Model (which runs where it is) or a model spec, loaded on
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; default cpu); ``layers``: spatial layers (default:
    two per model, :func:`default_layers`); ``classes``: the classes to explain (default: the top ``top``
    predictions), the first two form the contrasted pair. ``preset`` sets the icon and grid recipes (default:
    :func:`default_preset`, "quick" on a CPU and "default" on a GPU); ``icon_recipe`` / ``grid_recipe`` override
    single settings of it. The explanation says which it used (``preset``, ``recipe``, :attr:`Explanation.note`).

    ``score`` (``"logit"`` or ``"logprob"``) and ``group_method`` (``"linear"`` or ``"ablation"``) override
    :data:`ATTRIBUTION`; ``faithfulness`` measures, per layer, how well the shown numbers predict removing what
    they credit (:func:`~.analyses.faithfulness.layer_report`, about a second per layer).

    ``reference_icons``: a channel icon the store (or the reference pack beneath it, :mod:`blocklens.store.pack`)
    holds at the reference ("default") recipe is shown instead of rendering it at the preset; the explanation
    says how many icons came from where (:attr:`Explanation.sources`). Off with ``icon_recipe`` given.

    ``dictionary``: a concept dictionary (a :class:`~.dataset.dictionary.ConceptDictionary` or its key in the
    store) of this model; the explanation then also reads the image in its atoms at its layer
    (:attr:`Explanation.atoms`: the atoms at each position, attribution to atoms for every explained class with the
    residual, and a removal check; :mod:`.analyses.atoms`). A dictionary of another model is refused."""
    from .models import Model, load_model

    _check_options(preset, icons, grids)
    model = model if isinstance(model, Model) else load_model(model, device=device or "cpu")
    preset = preset or default_preset(model)
    recipe = {"icons": preset_options(preset, "icons", **(icon_recipe or {})),
              "grid": preset_options(preset, "grid", **(grid_recipe or {}))}
    counts = _group_counts(preset, group_counts, n_groups)
    if store is not False and not isinstance(store, IconStore):
        store = IconStore(store)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    prep = prepare(model, image)
    names = _layer_names(model, layers)
    concept = _dictionary_for(model, dictionary, store) if dictionary is not None else None
    cls, predictions = _explained_classes(model, prep, classes, top)
    times["predict"] = time.perf_counter() - t0
    methods = _methods(score, group_method)
    layer_results = []
    for name in names:
        t = time.perf_counter()
        layer_results.append(_explain_layer(model, prep, name, cls, counts, n_groups, methods, faithfulness))
        times[f"analyses {name}"] = time.perf_counter() - t
    flows = []
    for a, b in zip(layer_results, layer_results[1:]):
        t = time.perf_counter()
        flows.append(_flow(model, prep, a, b, methods["groups"]))
        times[f"flow {a.layer}->{b.layer}"] = time.perf_counter() - t
    result = Explanation(model=model.name, fingerprint=model.fingerprint, image_sha=_image_sha(prep.x),
                         crop=prep.crop, predictions=predictions, classes=cls, pair=(cls[0], cls[1]),
                         layers=layer_results, flows=flows, preset=preset, recipe=recipe,
                         n_groups=layer_results[-1].groups.n_groups)
    if concept is not None:
        from .analyses.atoms import atom_attribution

        t = time.perf_counter()
        result.atoms = atom_attribution(model, prep, concept.codebook, concept.layer, classes=cls,
                                        score=methods["score"], key=concept.key, method=concept.method)
        result.atoms_dictionary = _dictionary_info(concept, result.atoms)
        used = set(result.atoms.used_atoms())
        result.icons.update({a.key: a.icon for a in concept.atoms if a.key and a.icon is not None and a.index in used})
        times[f"atoms {concept.layer}"] = time.perf_counter() - t
    _plan(model, result, store if reference_icons and not icon_recipe else None)
    times["analyses"] = time.perf_counter() - t0
    finish(model, result, store, progress=progress, icons=icons, grids=grids, prep=prep)
    times.update(result.timings)
    times["total"] = time.perf_counter() - t0
    result.timings = times
    return result


def _dictionary_for(model, dictionary, store):
    """The concept dictionary ``dictionary`` (one, or its key in ``store``), refused unless it was learned on
    ``model`` (same fingerprint) at one of its layers with positions."""
    from .dataset.dictionary import ConceptDictionary, load_dictionary

    if isinstance(dictionary, str):
        dictionary = load_dictionary(dictionary, store if isinstance(store, IconStore) else IconStore(None))
    if not isinstance(dictionary, ConceptDictionary):
        raise BlocklensError(f"dictionary must be a ConceptDictionary or its key in the store, got "
                             f"{type(dictionary).__name__}")
    if dictionary.fingerprint != model.fingerprint:
        raise BlocklensError(f"dictionary {dictionary.key} was learned on {dictionary.model} (fingerprint "
                             f"{dictionary.fingerprint}), not on {model.name} (fingerprint {model.fingerprint}): "
                             f"explain with the model it was learned on, or learn one for this model "
                             f"(blocklens dictionary FOLDER --model ...)")
    spatial_layer(model, dictionary.layer, "explain(dictionary=...)")
    return dictionary


def _dictionary_info(d, atoms: AtomAttribution, drives: int = 3) -> dict:
    """What the atoms view shows of the dictionary ``d``: its key, model, layer, folder, method and size, and per
    atom shown (:meth:`AtomAttribution.used_atoms`) its icon key, coverage, top ``drives`` and flags."""
    by_index = {a.index: a for a in d.atoms}
    shown = {}
    for i in atoms.used_atoms():
        a = by_index.get(i)
        if a is None:
            continue
        shown[str(i)] = {"key": a.key or None, "coverage": a.coverage, "fires": a.fires,
                         "drives": [{"label": r.label, "prob_drop": r.prob_drop, "logit_drop": r.logit_drop}
                                    for r in a.drives[:drives]],
                         "flags": [c for c, _ in a.flags]}
    return to_jsonable({"key": d.key, "model": d.model, "layer": d.layer, "folder": d.folder, "method": d.method,
                        "atoms": len(d.atoms), "images": len(d.images), "shown": shown})


def _check_options(preset: str | None, icons, grids) -> None:
    """Refuse an unknown preset, and ``icons`` / ``grids`` other than True, False or "cached"."""
    if preset is not None and preset not in PRESETS:
        raise BlocklensError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    for what, v in (("icons", icons), ("grids", grids)):
        if v not in (True, False, "cached"):
            raise BlocklensError(f"{what} must be True, False or 'cached', got {v!r}")


def _group_counts(preset: str, group_counts: Sequence[int] | None, n_groups: int) -> list[int]:
    """The group counts on the slider (``group_counts``, default the preset's) with ``n_groups``, sorted."""
    counts = sorted({int(k) for k in (group_counts or PRESETS[preset]["group_counts"])} | {int(n_groups)})
    if counts[0] < 1:
        raise BlocklensError(f"group counts must be positive integers, got {counts}")
    return counts


def _layer_names(model, layers: Sequence[str] | None) -> list[str]:
    """The spatial layers to explain (default: :func:`default_layers`), each once, in forward order."""
    names = [spatial_layer(model, l, "explain").name for l in (layers or default_layers(model))]
    return sorted(dict.fromkeys(names), key=lambda n: model.layer(n).order)


def _explained_classes(model, prep, classes: Sequence | None, top: int) -> tuple[list[int], list[dict]]:
    """``(classes, predictions)``: the classes to explain (``classes``, default the ``top`` most probable) and
    ``{"index", "label", "prob"}`` of each; one forward pass."""
    ranked = model.predict(prep.x, top=len(model.labels))  # every class, most probable first
    cls = [model.class_index(c) for c in classes] if classes else [p.index for p in ranked[:top]]
    if len(cls) < 2:
        raise BlocklensError("explain needs at least two classes (the first two are contrasted)")
    probs = {p.index: p.prob for p in ranked}
    return cls, [{"index": c, "label": model.labels[c], "prob": probs[c]} for c in cls]


def _methods(score: str | None, group_method: str | None) -> dict:
    """:data:`ATTRIBUTION` with the ``score`` and ``group_method`` asked for."""
    return dict(ATTRIBUTION, **{k: v for k, v in (("score", score), ("groups", group_method)) if v})


def _explain_layer(model, prep, name: str, cls: list[int], counts: list[int], n_groups: int, methods: dict,
                   faithfulness: bool) -> LayerExplanation:
    """Every block of one layer: the semantic dictionary, channel attribution per class and for the pair,
    spatial attribution per class, neuron groups at every count, and (``faithfulness``) the faithfulness report."""
    sc, gm = methods["score"], methods["groups"]
    dictionary = semantic_dictionary(model, prep, name)
    act, grads, logits = class_gradients(model, prep.x, name, cls, sc)  # linear: one pass for all classes
    products = act.unsqueeze(0) * grads
    per_class = {c: channel_result(model, name, [c], "linear", products[k], float(logits[k]), score_name=sc)
                 for k, c in enumerate(cls)}
    pair = channel_result(model, name, cls[:2], "linear", products[0] - products[1],
                          float(logits[0] - logits[1]), score_name=sc)
    spatial = _class_spatial(model, prep, name, cls, methods, act, products)
    channels = model.layer(name).channels
    options = {k: neuron_groups(model, prep, name, n_groups=k, classes=cls, score=sc, method=gm)
               for k in counts if k <= channels}
    groups = options.get(n_groups) or options[max(options)]
    lr = LayerExplanation(layer=name, shape=model.layer(name).shape, dictionary=dictionary, attribution=per_class,
                          pair=pair, spatial=spatial, groups=groups, activations=act.detach().float().cpu().numpy(),
                          group_options=options, methods=dict(methods))
    if faithfulness:
        lr.faithfulness = _layer_faithfulness(model, prep, lr, cls[0], act, sc)
    return lr


def _class_spatial(model, prep, name: str, cls: list[int], methods: dict, act,
                   products) -> dict[int, SpatialAttribution]:
    """Spatial attribution of ``name`` to each class: along the path from zero (``methods["spatial"] == "path"``,
    every class in one batch) or linear (from the channel products already computed)."""
    sc = methods["score"]
    if methods["spatial"] != "path":
        return {c: SpatialAttribution(source=name, target=model.labels[c], target_kind="class", method="linear",
                                      maps=products[k].sum(0).double().cpu().numpy(), steps=1, classes=[c], score=sc)
                for k, c in enumerate(cls)}
    steps = int(methods["spatial_steps"])
    _, pg, at, at0 = class_path_gradients(model, prep.x, name, cls, sc, steps=steps)
    lgs = [LayerGradients(act, pg[k], float(at[k]), float(at0[k]), steps) for k in range(len(cls))]
    return {c: SpatialAttribution(source=name, target=model.labels[c], target_kind="class", method="path",
                                  maps=lg.product.sum(0).double().cpu().numpy(), steps=steps, classes=[c], score=sc,
                                  score_value=lg.score, baseline=lg.baseline, gap=lg.gap)
            for lg, c in zip(lgs, cls)}


def _layer_faithfulness(model, prep, lr: LayerExplanation, c0: int, act, sc: str) -> dict:
    """How well the layer's shown numbers for class ``c0`` predict removing what they credit."""
    from .analyses.faithfulness import layer_report

    spatial = lr.spatial[c0]
    return layer_report(model, prep.x, lr.layer, c0, model.labels[c0], channel_values=lr.attribution[c0].values,
                        channel_method="linear", spatial_map=spatial.maps, spatial_method=spatial.method,
                        spatial_gap=spatial.gap, groups=lr.groups, score=sc, act=act.detach())


def _flow(model, prep, a: LayerExplanation, b: LayerExplanation, gm: str) -> dict:
    """Between consecutive layers: layer-to-layer spatial attribution and group-to-group flows at every group
    count both layers have (and at their default counts)."""
    l2l = spatial_attribution(model, prep, a.layer, b.layer)
    by_k = {k: group_attribution(model, prep, a.group_options[k], b.group_options[k], method=gm)
            for k in a.group_options if k in b.group_options}
    same_k = a.groups.n_groups == b.groups.n_groups and a.groups.n_groups in by_k
    default = by_k[a.groups.n_groups] if same_k else group_attribution(model, prep, a.groups, b.groups, method=gm)
    return {"from": a.layer, "to": b.layer, "spatial_scale": l2l.scale, "spatial": l2l.maps,
            "groups": default, "groups_by_k": by_k, "groups_method": gm}


def _layer_targets(model, lr: LayerExplanation, channels) -> tuple[dict, dict]:
    """Icon targets of one layer: ``{channel: target}`` for ``channels`` and ``{k: [target per group]}`` for the
    direction of every group at every group count."""
    from .optvis.targets import channel_target, direction_target

    return ({c: channel_target(model, lr.layer, c) for c in channels},
            {k: [direction_target(model, lr.layer, v) for v in g.channel] for k, g in lr.group_options.items()})


def _plan(model, result: Explanation, store=None) -> None:
    """The store key of every icon the views show: channels of each layer (:meth:`LayerExplanation.shown_channels`)
    and the direction of every group at every group count; and each layer's grid key. With a ``store``, a channel
    whose reference-recipe icon it holds (or the pack beneath it) is planned at that recipe instead."""
    recipe = recipe_for(**result.recipe["icons"])
    reference = preset_icon_recipe("default")
    use_reference = store is not None and store is not False and reference != recipe
    for lr in result.layers:
        channels, groups = _layer_targets(model, lr, lr.shown_channels())
        keys = {}
        for c, t in channels.items():
            ref = icon_key_for(model, t, reference) if use_reference else None
            keys[c] = ref if ref is not None and store.exists(ref) else icon_key_for(model, t, recipe)
        result.icon_index[lr.layer] = {
            "channels": keys,
            "groups": {k: [icon_key_for(model, t, recipe) for t in ts] for k, ts in groups.items()}}
        lr.grid_key = grid_key(model, result.image_sha, lr.layer, result.recipe["grid"])


def _targets(model, result: Explanation) -> list:
    """Every planned icon target, in render order: per layer, its channels then its group directions."""
    return list(planned_targets(model, result).values())


def planned_targets(model, result: Explanation) -> dict:
    """Store key -> target of every icon the views show, in render order (the order of :attr:`missing`)."""
    out = {}
    for lr in result.layers:
        idx = result.icon_index[lr.layer]
        channels, groups = _layer_targets(model, lr, idx["channels"])
        out.update({idx["channels"][c]: t for c, t in channels.items()})
        for k, ts in groups.items():
            out.update(zip(idx["groups"][k], ts))
    return out


def _replan_missing(model, result: Explanation, store) -> None:
    """Channels planned at the reference recipe whose icon is gone from the store (or found corrupt) go back to
    the explanation's own recipe, so that they are rendered rather than never shown."""
    recipe = recipe_for(**result.recipe["icons"])
    for lr in result.layers:
        idx = result.icon_index[lr.layer]
        channels, _ = _layer_targets(model, lr, idx["channels"])
        for c, t in channels.items():
            own = icon_key_for(model, t, recipe)
            key = idx["channels"][c]
            if key != own and key not in result.icons and (store is False or not store.exists(key)):
                idx["channels"][c] = own


def finish(model, result: Explanation, store=None, *, progress: bool | None = None, icons: bool | str = True,
           grids: bool | str = True, prep=None, on_progress=None) -> Explanation:
    """Fill in the pictures of an explanation: icons (``icons=True`` renders what the store lacks, ``"cached"``
    takes only what is there) and activation grids (the same for ``grids``). ``on_progress(stage, done, total)``
    reports each rendered batch (stage ``"icons"`` or ``"grid <layer>"``). Returns ``result``."""
    if store is not False and not isinstance(store, IconStore):
        store = IconStore(store)
    times = {}
    if icons:
        t = time.perf_counter()
        _replan_missing(model, result, store)
        if icons == "cached":
            got = {} if store is False else {k: i for k in dict.fromkeys(result.missing) if (i := store.get(k))}
        else:
            cb = (lambda done, total: on_progress("icons", done, total)) if on_progress else None
            counted = {}

            def cb(done, total, _user=cb):
                counted["total"] = total
                if _user:
                    _user(done, total)

            own = recipe_for(**result.recipe["icons"])
            planned = planned_targets(model, result)
            # planned at another recipe (the reference): fetched, never rendered
            elsewhere = [k for k, t in planned.items() if k != icon_key_for(model, t, own)]
            got = {k: icon for k in elsewhere if store is not False and (icon := store.get(k))}
            if len(got) < len(elsewhere):
                _replan_missing(model, result, store)  # one vanished between the plan and now
                planned = planned_targets(model, result)
            todo = [t for k, t in planned.items() if k not in got]
            rendered = get_icons(model, todo, store=store, progress=progress, on_batch=cb, batch=ICON_BATCH,
                                 preset=result.preset, **result.recipe["icons"])
            got.update({i.key: i for i in rendered})
            result.rendered = counted.get("total", 0)
        result.icons.update(got)
        _attach(result)
        times["icons"] = time.perf_counter() - t
        _assess(model, result)
    if grids:
        t = time.perf_counter()
        for lr in result.layers:
            if lr.grid is not None:
                continue
            if grids == "cached":
                lr.grid = _stored_grid(store, lr.grid_key) if store is not False else None
                continue
            if prep is None:
                raise BlocklensError("finish(grids=True) needs the prepared image (prep=) to render a grid")
            cb = None
            if on_progress:
                def cb(done, total, _layer=lr.layer):
                    on_progress(f"grid {_layer}", done, total)
            lr.grid = cached_grid(model, prep, lr.layer, store, progress=progress, on_batch=cb,
                                  **result.recipe["grid"])
        times["grids"] = time.perf_counter() - t
    result.timings.update(times)
    return result


def _assess(model, result: Explanation) -> None:
    """The quality figures of each layer's channel icons (one forward pass over them and the photographs)."""
    from .quality import assess

    for lr in result.layers:
        keys = [k for k in result.icon_index[lr.layer]["channels"].values() if k in result.icons]
        if not keys:
            continue
        q = assess(model, [result.icons[k] for k in keys])
        result.quality[lr.layer] = {"summary": q.summary(), "line": q.line(),
                                    "icons": {k: q.per_icon(i) for i, k in enumerate(keys)}}


def _attach(result: Explanation) -> None:
    """Hand the icons held to the block results (dictionary, attribution, groups) that show them."""
    for lr in result.layers:
        idx = result.icon_index[lr.layer]
        by_channel = {c: result.icons[k] for c, k in idx["channels"].items() if k in result.icons}
        lr.dictionary.icons = {c: by_channel[c] for c in lr.dictionary.used_channels if c in by_channel}
        for a in [*lr.attribution.values(), lr.pair]:
            a.icons = {c: by_channel[c] for c, _ in a.positive + a.negative if c in by_channel}
        for k, g in lr.group_options.items():
            keys = idx["groups"][k]
            g.icons = [result.icons[key] for key in keys] if all(key in result.icons for key in keys) else None


def grid_key(model, image_sha: str, layer: str, grid_recipe: dict) -> str:
    return icon_key(model.fingerprint, layer, f"grid:{image_sha}", dict(grid_recipe))


def _stored_grid(store, key):
    from .optvis.grid import ActivationGrid

    icon = store.get(key)
    if icon is not None and "grid" in icon.meta:
        return ActivationGrid.from_stored(icon.image, icon.meta["grid"])
    return None


def cached_grid(model, prep, layer: str, store, progress=None, on_batch=None, **grid_recipe):
    """The activation grid of ``layer`` for this image, from the store when it was computed before."""
    from .optvis.grid import activation_grid

    kw = {"on_batch": on_batch} if on_batch is not None else {}
    if store is False:
        return activation_grid(model, prep, layer, progress=progress, **kw, **grid_recipe)
    key = grid_key(model, _image_sha(prep.x), layer, grid_recipe)
    grid = _stored_grid(store, key)
    if grid is not None:
        return grid
    grid = activation_grid(model, prep, layer, progress=progress, **kw, **grid_recipe)
    pixels, meta = grid.to_stored()
    store.put(key, pixels, {"grid": meta, "layer": layer, "unit": "grid"})
    return grid
