"""Neuron groups: one image's activations at one layer factorized into a few groups, with their attribution.

The atoms of a layer -- its ``C`` channels at ``H x W`` positions -- are too many to look at one by one.
Non-negative matrix factorization of the ``(H*W, C)`` activation matrix of a single image gives ``k`` groups
(default 6), each an outer product of

- a **spatial factor** ``S_g`` ``(H, W)`` >= 0: where on the image the group fires, and
- a **channel factor** ``W_g`` ``(C,)``: which combination of channels it is -- a direction in activation
  space that can be rendered as an icon (:func:`~blocklens.optvis.targets.direction_target`).

Signed layers (linear bottlenecks such as EfficientNet's block outputs) are factorized as
``[relu(A), relu(-A)]`` (see :mod:`.factorize`); ``channel_nonneg`` keeps the fitted ``(k, 2C)`` factors and
``channel`` the folded signed direction ``positive - negative``.

Groups are ordered left to right by the column of their spatial peak (ties: top to bottom), coloured with
evenly spaced hues (:mod:`.colors`), and the grid is painted with the blend of the group colours.

**Attribution through groups** (linear, gradient x activation). The activations are split *exactly* among
the groups: every element ``A[c, y, x]`` goes to group ``g`` in proportion to that group's reconstruction of
it, ``S_g[y, x] * W_g[c]`` over the sum of all groups' reconstructions (for signed layers the positive part
``relu(A)`` by the positive factors and the negative part by the negative ones). Elements no group
reconstructs at all form a ``residual``. With ``G = d logit / d A``::

    attribution[g, class] = sum(A_g * G_class)      residual[class] = sum(A_residual * G_class)
    sum_g attribution[g, class] + residual[class] == whole[class] == sum(A * G_class)

``method="ablation"`` replaces the linear estimate by the measured effect of removing each group's share:
``attribution[g, class] = score(A) - score(A - A_g)`` (one forward pass from the layer per group, every class
from the same passes); then ``whole`` is the effect of removing every group at once and ``residual`` what the
one-at-a-time effects miss of it (``whole - sum_g attribution[g]``: interactions, not unexplained activation).
``score`` is each class's ``logit`` or ``logprob`` (:mod:`.faithfulness` measures which predicts removal better).

Between two layers (:func:`group_attribution`), the "logit" of a later group ``h`` is the projection
coefficient of the later layer's non-negative activation matrix ``X2`` on the group's pattern
``P_h = S_h (outer) W_h``: ``score_h = <X2, P_h> / <P_h, P_h>``, and the earlier group ``g`` gets
``sum(A1_g * d score_h / d A1)``. These flows are what the article draws as a Sankey diagram.

>>> import blocklens as bl                                                      # doctest: +SKIP
>>> model = bl.load_model("efficientnet_lite0")                                 # doctest: +SKIP
>>> g = bl.neuron_groups(model, bl.bundled_image("dog"), "blocks.9.expand.act")  # doctest: +SKIP
>>> g.spatial.shape, g.attribution.shape        # (6, 14, 14), (6 groups, 5 top classes)  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import BlocklensError
from ..probe import LayerInfo
from .attribution import class_gradients
from .colors import blend, group_colors
from .common import class_indices, prepare, spatial_layer, to_jsonable
from .factorize import nmf, split_activations
from .interventions import removal_effects, run_replaced, scores_of


@dataclass(repr=False)
class NeuronGroups:
    """The groups of one image at one layer (``k`` groups, ``n`` classes, layer grid ``C x H x W``).

    Group arrays share one order: left to right by ``peak`` x, then by y.
    """

    layer: str
    n_groups: int
    spatial: np.ndarray          # (k, H, W) float32 >= 0: where each group fires
    channel: np.ndarray          # (k, C) float32: each group's direction (signed for signed layers)
    channel_nonneg: np.ndarray   # (k, C) or (k, 2C) float32 >= 0: the fitted factors ([pos, neg] when signed)
    signed: bool                 # the layer had negative values and was factorized as [relu(A), relu(-A)]
    relative_error: float        # ||X - S W||_F / ||X||_F on the fitted non-negative matrix
    peak: np.ndarray             # (k, 2) int: (x, y) of each spatial factor's maximum
    colors: np.ndarray           # (k, 3) uint8 sRGB
    cell_colors: np.ndarray      # (H, W, 3) uint8: the grid painted with the blended group colours
    classes: list[int]           # (n,) class indices
    labels: list[str]            # (n,) class names
    attribution: np.ndarray      # (k, n) float64: linear attribution of each group to each class logit
    residual: np.ndarray         # (n,) float64: the part of the activations no group reconstructs
    whole: np.ndarray            # (n,) float64: the whole layer's attribution, sum(A * dlogit/dA)
    logits: np.ndarray           # (n,) float64: the class logits for this image
    icons: list | None = None    # k Icons (the channel directions rendered), or None
    score: str = "logit"         # what ``attribution`` explains per class: "logit" or "logprob"
    method: str = "linear"       # how: "linear" (gradient x share) or "ablation" (removing the share)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``: the layer's grid."""
        return tuple(self.spatial.shape[1:])

    def __repr__(self) -> str:
        h, w = self.shape
        sign = ", signed" if self.signed else ""
        return (f"<NeuronGroups {self.layer!r}: {self.n_groups} groups on {h}x{w}{sign}, "
                f"rel. error {self.relative_error:.3f}, {len(self.classes)} classes"
                f"{', icons' if self.icons is not None else ''}>")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: arrays as nested lists, icons as their store keys (``channel_nonneg`` is left out)."""
        return to_jsonable({
            "layer": self.layer, "n_groups": self.n_groups, "shape": list(self.shape), "signed": self.signed,
            "relative_error": self.relative_error, "spatial": self.spatial, "channel": self.channel,
            "peak": self.peak, "colors": self.colors, "cell_colors": self.cell_colors,
            "classes": [int(i) for i in self.classes], "labels": list(self.labels),
            "attribution": self.attribution, "residual": self.residual, "whole": self.whole,
            "logits": self.logits, "score": self.score, "method": self.method,
            "icons": None if self.icons is None else [getattr(i, "key", None) for i in self.icons],
        })


def _order(spatial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peaks ``(k, 2)`` as (x, y) and the left-to-right order (ties: top to bottom, then the fitted order)."""
    k, h, w = spatial.shape
    flat = spatial.reshape(k, -1).argmax(axis=1)
    ys, xs = np.divmod(flat, w)
    peak = np.stack([xs, ys], axis=1).astype(np.int64)
    order = np.lexsort((np.arange(k), ys, xs))
    return peak, order


def _grads(output: torch.Tensor, inputs: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """``d <output, cotangents[i]> / d inputs`` for each row of ``cotangents`` ``(n, *output.shape)``
    -> ``(n, *inputs.shape)``: one backward pass per row over the retained graph.

    (``torch.autograd.grad(..., is_grads_batched=True)`` gives the same in one call, but on CPU it measured
    no faster -- 0.20 s against 0.18 s for 5 classes of EfficientNet-Lite0 -- and relies on vmap support of
    every op in the model, so the plain loop is used.)
    """
    n = cotangents.shape[0]
    out = []
    for i in range(n):
        (g,) = torch.autograd.grad(output, inputs, grad_outputs=cotangents[i], retain_graph=i < n - 1)
        out.append(g)
    return torch.stack(out)


def _grad_input(x: torch.Tensor) -> torch.Tensor:
    """The input as a leaf that requires grad, so the layers are in the autograd graph even when the model's
    weights are frozen (the zoo's are)."""
    return x.detach().clone().requires_grad_(True)


def _check_groups(n_groups: int, info: LayerInfo) -> int:
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)):
        raise BlocklensError(f"n_groups must be an integer, got {n_groups!r}")
    n_groups = int(n_groups)
    c, h, w = info.shape
    if n_groups < 1:
        raise BlocklensError(f"n_groups must be at least 1, got {n_groups}")
    if n_groups > c:
        raise BlocklensError(f"n_groups={n_groups} is more than the {c} channels of layer {info.name!r}; "
                             f"ask for at most {c} groups")
    if n_groups > h * w:
        raise BlocklensError(f"n_groups={n_groups} is more than the {h * w} positions ({h}x{w}) of layer "
                             f"{info.name!r}; ask for at most {h * w} groups")
    return n_groups


GROUP_METHODS = ("linear", "ablation")


def neuron_groups(model, image, layer: str | LayerInfo, n_groups: int = 6, *, classes: Sequence | None = None,
                  top: int = 5, seed: int = 0, score: str = "logit", method: str = "linear") -> NeuronGroups:
    """Factorize one image's activations at ``layer`` into ``n_groups`` groups and attribute classes to them.

    - ``image``: a path, bytes, PIL image or a ``(1, 3, S, S)`` model input.
    - ``layer``: a layer with positions ``(C, H, W)``.
    - ``classes``: class names or indices; None means the model's ``top`` predictions for this image.
    - ``seed``: the NMF seed.
    - ``score``: each class's ``logit`` or ``logprob``; ``method``: ``linear`` or ``ablation`` (module doc).
    - the result's ``channel`` rows are directions in the layer's channel space; ``bl.neuron_groups(...,
      icons=True)`` (:mod:`blocklens.blocks`) renders each as an icon.

    The class gradients come from :func:`~.attribution.class_gradients` (every class in one batched pass after
    ``layer``), the factorization from :mod:`.factorize`.
    """
    info = spatial_layer(model, layer, "neuron_groups")
    n_groups = _check_groups(n_groups, info)
    if method not in GROUP_METHODS:
        raise BlocklensError(f"unknown group attribution method {method!r}; choose one of {', '.join(GROUP_METHODS)}")
    x = prepare(model, image).x
    if classes is not None:
        idx = class_indices(model, classes)
    elif isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise BlocklensError(f"top must be a positive integer, got {top!r}")
    else:
        idx = [p.index for p in model.predict(x, top=int(top))]
    if method == "ablation":  # no gradients needed: the activation, and each class's score for the record
        act = model.activations(x, info.name)[info.name][0]                 # (C, H, W)
        with torch.no_grad():
            logits = scores_of(model(x), idx, score)[0]                     # (n,)
    else:
        act, grads, logits = class_gradients(model, x, info.name, idx, score)  # (C, H, W), (n, C, H, W), (n,)
        g = grads.double().cpu().numpy()
    a = act.double().cpu().numpy()

    try:
        f = nmf(a.astype(np.float32), n_groups, seed=seed)
    except BlocklensError as e:
        raise BlocklensError(f"layer {info.name!r}: {e}") from e
    peak, order = _order(f.spatial)
    spatial, channel, nonneg, peak = f.spatial[order], f.channel[order], f.channel_nonneg[order], peak[order]

    parts, residual = split_activations(a, spatial, nonneg, f.signed)
    if method == "ablation":
        removal = removal_effects(model, x, info.name, np.concatenate([parts, parts.sum(0)[None]]), idx, score,
                                  act=act)
        attribution, whole = removal[:-1], removal[-1]
        residual_share = whole - attribution.sum(0)
    else:
        attribution = np.einsum("kchw,nchw->kn", parts, g)
        residual_share, whole = np.einsum("chw,nchw->n", residual, g), np.einsum("chw,nchw->n", a, g)
    colors = group_colors(n_groups)
    result = NeuronGroups(
        layer=info.name, n_groups=n_groups, spatial=spatial, channel=channel, channel_nonneg=nonneg,
        signed=f.signed, relative_error=float(f.relative_error), peak=peak, colors=colors,
        cell_colors=blend(spatial, colors), classes=idx, labels=[model.labels[i] for i in idx],
        attribution=attribution, residual=residual_share, whole=whole, logits=logits.double().cpu().numpy(),
        score=score, method=method,
    )
    return result


def _pattern_scores(act2: torch.Tensor, later: NeuronGroups) -> torch.Tensor:
    """``(k2,)`` projection coefficients of the later layer's non-negative matrix on each group pattern."""
    a = act2[0].double()                                          # (C2, H2, W2)
    x2 = torch.cat([a.clamp(min=0), (-a).clamp(min=0)]) if later.signed else a
    s = torch.as_tensor(later.spatial, dtype=torch.float64, device=a.device)          # (k2, H2, W2)
    w = torch.as_tensor(later.channel_nonneg, dtype=torch.float64, device=a.device)   # (k2, C2')
    if w.shape[1] != x2.shape[0] or tuple(s.shape[1:]) != tuple(x2.shape[1:]):
        raise BlocklensError(f"groups of {later.layer!r} have factors {tuple(w.shape)} x {tuple(s.shape)}, which "
                             f"do not fit the layer's activations {tuple(a.shape)}")
    dots = torch.einsum("chw,khw,kc->k", x2, s, w)                # <X2, P_h>
    norms = (s.flatten(1) ** 2).sum(1) * (w ** 2).sum(1)          # <P_h, P_h> of a rank-one pattern
    return dots / torch.where(norms > 0, norms, torch.ones_like(norms))


def group_attribution(model, image, earlier: NeuronGroups, later: NeuronGroups, method: str = "linear") -> np.ndarray:
    """Attribution ``(k_earlier, k_later)`` from each group of an earlier layer to each group of a later one.

    The score of later group ``h`` is ``<X2, P_h> / <P_h, P_h>`` (``X2`` the later layer's non-negative
    activation matrix, ``P_h = spatial_h (outer) channel_nonneg_h``); earlier group ``g`` gets
    ``sum(A1_g * d score_h / d A1)`` with ``A1_g`` its exact share of the earlier activations (see
    :func:`split_activations`). Row sums plus the earlier residual's share equal ``sum(A1 * d score_h / d A1)``.
    Pass the same image both groups were computed for.

    ``method="ablation"``: instead, earlier group ``g`` gets ``score_h(A1) - score_h(A1 - A1_g)``, the measured
    drop of the later group's score when ``g``'s share is removed (one pass from the earlier layer to the later
    one per group).
    """
    if method not in GROUP_METHODS:
        raise BlocklensError(f"unknown group attribution method {method!r}; choose one of {', '.join(GROUP_METHODS)}")
    for name, grp in (("earlier", earlier), ("later", later)):
        if not isinstance(grp, NeuronGroups):
            raise BlocklensError(f"group_attribution: {name} must be a NeuronGroups result, got {type(grp).__name__}")
    info1, info2 = model.layer(earlier.layer), model.layer(later.layer)
    if info1.name == info2.name:
        raise BlocklensError(f"group_attribution needs two different layers; both groups are of {info1.name!r}")
    if info1.order > info2.order:
        raise BlocklensError(f"group_attribution: the earlier layer {info1.name!r} (position {info1.order} in "
                             f"the forward pass) must run before the later layer {info2.name!r} (position "
                             f"{info2.order}); swap them")
    if method == "ablation":
        return _group_removal(model, prepare(model, image).x, earlier, later, info1.name, info2.name)
    x = _grad_input(prepare(model, image).x)
    with model.probe([info1, info2], grad=True) as probe:
        probe.run(x, stop=True)
        act1, act2 = probe.activations[info1.name], probe.activations[info2.name]
        scores = _pattern_scores(act2, later)                     # (k2,)
        eye = torch.eye(scores.shape[0], dtype=scores.dtype, device=scores.device)
        grads = _grads(scores, act1, eye)[:, 0]           # (k2, C1, H1, W1)
    a1 = act1.detach()[0].double().cpu().numpy()
    if a1.shape[1:] != earlier.spatial.shape[1:]:
        raise BlocklensError(f"groups of {earlier.layer!r} have a {earlier.spatial.shape[1:]} grid but the layer's "
                             f"activations are {a1.shape}")
    parts, _ = split_activations(a1, earlier.spatial, earlier.channel_nonneg, earlier.signed)
    return np.einsum("kchw,mchw->km", parts, grads.detach().double().cpu().numpy())


@torch.no_grad()
def _group_removal(model, x, earlier: NeuronGroups, later: NeuronGroups, name1: str, name2: str) -> np.ndarray:
    act1 = model.activations(x, name1)[name1][0]
    if tuple(act1.shape[1:]) != tuple(earlier.spatial.shape[1:]):
        raise BlocklensError(f"groups of {earlier.layer!r} have a {earlier.spatial.shape[1:]} grid but the layer's "
                             f"activations are {tuple(act1.shape)}")
    parts, _ = split_activations(act1.double().cpu().numpy(), earlier.spatial, earlier.channel_nonneg,
                                 earlier.signed)
    variants = torch.cat([act1[None], act1[None] - torch.as_tensor(parts, dtype=act1.dtype, device=act1.device)])
    _, acts = run_replaced(model, x, name1, variants, [name2], stop=True)
    a2 = acts[name2]
    scores = torch.stack([_pattern_scores(a2[i:i + 1], later) for i in range(a2.shape[0])])  # (k1 + 1, k2)
    return (scores[0][None] - scores[1:]).double().cpu().numpy()
