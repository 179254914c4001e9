"""Attribution from and to hidden layers: which positions and which channels decided a score.

Two methods, named the same everywhere:

``linear``
    gradient x activation: ``A * dscore/dA`` (the article's "linear approximation").
``path``
    the layer's activations are scaled from zero to their value, ``alpha * A`` for ``alpha = (k + 0.5) / N``
    (midpoint rule; ``rule="left"`` gives ``k / N``), the gradients are averaged and multiplied by ``A``.
    The attributions then add up to ``score(A) - score(0)`` (completeness) up to the discretization gap, which
    every result reports. The baseline is *zero activations at this layer*; Captum's
    ``LayerIntegratedGradients`` instead integrates along a path of *inputs* from a baseline image, a
    different (also legitimate) quantity.

The alphas run as batches through the network (``chunk`` at a time), not as a Python loop of N passes.

Blocks:

- :func:`channel_attribution`: per-channel attribution, summed over positions, of one class's logit or the
  difference of two (``classes=("Labrador retriever", "tiger cat")``);
- :func:`spatial_attribution`: per-position attribution, summed over channels, either of a class's logit (a map
  over the source layer) or of every position of a later layer (for each later position, a map over the
  source layer: ``score = ||A2[:, y2, x2]||``), all later positions in one batched backward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..errors import BlocklensError
from .common import MAX_POSITIONS, Prepared, check_positions, class_indices, prepare, spatial_layer, to_jsonable
from .interventions import class_score, pair_score_name, run_replaced, scores_of

METHODS = ("linear", "path")


def _check_method(method: str, steps: int) -> None:
    if method not in METHODS:
        raise BlocklensError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "path" and steps < 1:
        raise BlocklensError(f"path attribution needs steps >= 1, got {steps}")


def alphas_for(steps: int, rule: str = "midpoint") -> torch.Tensor:
    """The path's scale factors: ``(k + 0.5) / N`` (midpoint) or ``k / N`` (left), k = 0..N-1."""
    k = torch.arange(steps, dtype=torch.float32)
    if rule == "midpoint":
        return (k + 0.5) / steps
    if rule == "left":
        return k / steps
    raise BlocklensError(f"unknown path rule {rule!r}; choose 'midpoint' or 'left'")


@dataclass
class LayerGradients:
    """Activation ``A`` (C, ...) of one image at a layer and the gradient ``G`` of the score there, averaged
    over the path for ``path``; ``score`` at ``A`` and ``baseline`` at zero activations (path only)."""

    activation: torch.Tensor
    gradient: torch.Tensor
    score: float
    baseline: float | None
    steps: int

    @property
    def product(self) -> torch.Tensor:
        return self.activation * self.gradient

    @property
    def gap(self) -> float | None:
        """Relative completeness gap |sum(A*G) - (score - baseline)| / |score - baseline| (path only)."""
        if self.baseline is None:
            return None
        delta = self.score - self.baseline
        return abs(float(self.product.double().sum()) - delta) / max(abs(delta), 1e-12)


def layer_gradients(model, x: torch.Tensor, layer: str, score_fn, method: str = "linear", steps: int = 50,
                    rule: str = "midpoint", chunk: int = 16) -> LayerGradients:
    """Gradients of ``score_fn(model output)`` with respect to ``layer``'s activations for the one image ``x``."""
    _check_method(method, steps)
    name = model.layer(layer).name
    if method == "linear":  # one pass: the layer's output becomes a leaf we differentiate against
        leaf = {}
        with model.probe([name], edit={name: lambda t: leaf.setdefault("a", t.detach().requires_grad_(True))}) as p:
            values = score_fn(p.run(x, stop=False))
        (g,) = torch.autograd.grad(values.sum(), leaf["a"])
        return LayerGradients(leaf["a"][0].detach(), g[0], float(values[0].detach()), None, 1)

    with torch.no_grad(), model.probe([name]) as probe:
        out = probe.run(x, stop=False)
    act = probe.activations[name][0]
    score = float(score_fn(out)[0])

    total = torch.zeros_like(act, dtype=torch.float64)
    alphas = alphas_for(steps, rule)
    for start in range(0, steps, chunk):
        al = alphas[start:start + chunk].to(act)
        scaled = (al.view(-1, *[1] * act.dim()) * act).requires_grad_(True)
        out, _ = run_replaced(model, x, name, scaled)
        (g,) = torch.autograd.grad(score_fn(out).sum(), scaled)
        total += g.double().sum(0)
    with torch.no_grad():
        base = float(score_fn(run_replaced(model, x, name, torch.zeros_like(act)[None])[0])[0])
    return LayerGradients(act, (total / steps).float(), score, base, steps)


def class_gradients(model, x: torch.Tensor, layer: str, classes: Sequence[int], score: str = "logit"
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear attribution inputs for several classes at once: the activation ``A`` (C, ...), the gradients
    ``G`` (K, C, ...) of each class's score (``logit`` or ``logprob``), and the scores (K,). One forward to the
    layer, the rest of the network once on a batch of K copies of ``A``, one backward pass."""
    if score not in ("logit", "logprob"):
        raise BlocklensError(f"class_gradients explains each class's 'logit' or 'logprob', not {score!r}")
    name = model.layer(layer).name
    with torch.no_grad(), model.probe([name]) as probe:
        probe.run(x)
    act = probe.activations[name][0]
    copies = act.expand(len(classes), *act.shape).clone().requires_grad_(True)
    out, _ = run_replaced(model, x, name, copies)
    logits = scores_of(out, classes, score).diagonal()  # copy k scores class k
    (g,) = torch.autograd.grad(logits.sum(), copies)
    return act, g, logits.detach()


def class_path_gradients(model, x: torch.Tensor, layer: str, classes: Sequence[int], score: str = "logit",
                         steps: int = 16, rule: str = "midpoint", chunk: int = 64
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Path attribution inputs for several classes at once: ``A`` (C, ...), the path-averaged gradients ``G``
    (K, C, ...) of each class's score, the scores at ``A`` (K,) and at zero activations (K,). The (class, alpha)
    pairs run as batches of ``chunk`` from the layer on; ``(A * G[k]).sum()`` is close to
    ``score_k(A) - score_k(0)`` (the completeness gap shrinks with ``steps``)."""
    if score not in ("logit", "logprob"):
        raise BlocklensError(f"class_path_gradients explains each class's 'logit' or 'logprob', not {score!r}")
    _check_method("path", steps)
    name = model.layer(layer).name
    with torch.no_grad(), model.probe([name]) as probe:
        probe.run(x)
    act = probe.activations[name][0]
    cls = torch.as_tensor([int(c) for c in classes])
    alphas = alphas_for(steps, rule).to(act)
    pairs = [(k, a) for k in range(len(cls)) for a in range(steps)]
    total = torch.zeros((len(cls), *act.shape), dtype=torch.float64)
    for start in range(0, len(pairs), chunk):
        ks = torch.as_tensor([k for k, _ in pairs[start:start + chunk]])
        al = alphas[torch.as_tensor([a for _, a in pairs[start:start + chunk]])]
        scaled = (al.view(-1, *[1] * act.dim()) * act).requires_grad_(True)
        out, _ = run_replaced(model, x, name, scaled)
        vals = scores_of(out, cls, score)[torch.arange(len(ks)), ks]  # element i scores its own class
        (g,) = torch.autograd.grad(vals.sum(), scaled)
        total.index_add_(0, ks, g.double().cpu())
    with torch.no_grad():
        ends = torch.stack([act, torch.zeros_like(act)])
        out, _ = run_replaced(model, x, name, ends)
        vals = scores_of(out, cls, score)
    return act, (total / steps).to(act.dtype), vals[0].detach(), vals[1].detach()


# -- channel attribution -----------------------------------------------------------------------------------------
@dataclass
class ChannelAttribution:
    """Per-channel attribution at ``layer`` of the score named ``score_name`` (``logit``, ``logprob`` or ``pair``:
    logit(a) - logit(b)), whose value for this image is ``score``.

    ``values`` (C,): each channel's attribution summed over positions; ``positive`` / ``negative``: the top
    channels as (channel, value), strongest first; ``gap``: completeness gap of the path method.
    """

    layer: str
    classes: list[int]
    labels: list[str]
    method: str
    steps: int
    values: np.ndarray
    score: float
    baseline: float | None
    gap: float | None
    positive: list[tuple[int, float]]
    negative: list[tuple[int, float]]
    icons: dict[int, object] | None = None
    score_name: str = "logit"

    def __repr__(self) -> str:
        what = " - ".join(self.labels)
        return (f"<ChannelAttribution {self.layer} [{what}] {self.method}: top +{self.positive[:3]} "
                f"-{self.negative[:3]}>")

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("layer", "classes", "labels", "method", "steps", "values", "score",
                                           "baseline", "gap", "positive", "negative")}
        d["score_value"], d["score"] = d["score"], self.score_name
        d["icons"] = {c: i.key for c, i in self.icons.items()} if self.icons else None
        return to_jsonable(d)


def _top(values: np.ndarray, k: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    order = np.argsort(-values)
    pos = [(int(c), float(values[c])) for c in order[:k] if values[c] > 0]
    neg = [(int(c), float(values[c])) for c in order[::-1][:k] if values[c] < 0]
    return pos, neg


def channel_result(model, layer: str, classes: list[int], method: str, product: torch.Tensor, score: float,
                   baseline: float | None = None, gap: float | None = None, steps: int = 1,
                   top: int = 8, score_name: str = "logit") -> ChannelAttribution:
    """A :class:`ChannelAttribution` from the attribution product ``A * G`` (C, ...)."""
    values = (product.flatten(1).sum(1) if product.dim() > 1 else product).double().cpu().numpy()
    pos, neg = _top(values, top)
    return ChannelAttribution(layer=model.layer(layer).name, classes=list(classes),
                              labels=[model.labels[i] for i in classes], method=method, steps=steps, values=values,
                              score=score, baseline=baseline, gap=gap, positive=pos, negative=neg,
                              score_name=pair_score_name(classes, score_name))


def channel_attribution(model, image, layer: str, classes, *, method: str = "linear", steps: int = 50,
                        rule: str = "midpoint", tolerance: float | None = None, max_steps: int = 800,
                        top: int = 8, score: str = "logit") -> ChannelAttribution:
    """Which channels of ``layer`` decided ``classes`` (one class, or two: "a over b") for ``image``.

    ``score``: ``logit`` or ``logprob`` of one class (two classes: their logit difference). With
    ``method="path"`` and a ``tolerance``, the number of steps doubles until the completeness gap is below it
    (or ``max_steps`` is reached; the result reports the gap either way).
    """
    prep = prepare(model, image)
    idx = class_indices(model, classes)
    score_fn = class_score(idx, score)
    lg = layer_gradients(model, prep.x, layer, score_fn, method, steps, rule)
    while method == "path" and tolerance is not None and lg.gap > tolerance and lg.steps * 2 <= max_steps:
        lg = layer_gradients(model, prep.x, layer, score_fn, method, lg.steps * 2, rule)
    result = channel_result(model, layer, idx, method, lg.product, lg.score, lg.baseline, lg.gap, lg.steps, top,
                            score)
    return result


# -- spatial attribution -----------------------------------------------------------------------------------------
@dataclass
class SpatialAttribution:
    """Per-position attribution at ``source`` (summed over channels).

    For a class target, ``maps`` is (H1, W1). For a layer target, ``maps`` is (H2, W2, H1, W1): for each
    position of the later layer, what it is influenced by at the source layer. ``scale`` is the largest
    absolute value: ``normalized()`` divides by it, the article's display convention.
    """

    source: str
    target: str
    target_kind: str  # "class" | "layer"
    method: str
    maps: np.ndarray
    steps: int = 1
    classes: list[int] = field(default_factory=list)
    score: str = "logit"  # class targets: logit | logprob | pair; layer targets: "norm" (||A2[:, y2, x2]||)
    score_value: float | None = None  # class targets: the score at the image's activations
    baseline: float | None = None     # class targets, path: the score at zero activations
    gap: float | None = None          # class targets, path: the completeness gap (see LayerGradients.gap)

    @property
    def scale(self) -> float:
        return float(np.abs(self.maps).max()) or 1.0

    def normalized(self) -> np.ndarray:
        return self.maps / self.scale

    def __repr__(self) -> str:
        return f"<SpatialAttribution {self.source} <- {self.target} {self.method} {self.maps.shape}>"

    def to_json(self) -> dict:
        return to_jsonable({"source": self.source, "target": self.target, "target_kind": self.target_kind,
                            "method": self.method, "score": self.score, "steps": self.steps, "classes": self.classes,
                            "score_value": self.score_value, "baseline": self.baseline, "gap": self.gap,
                            "shape": list(self.maps.shape), "scale": self.scale, "maps": self.maps})


def spatial_attribution(model, image, source_layer: str, target, *, method: str = "linear", steps: int = 50,
                        rule: str = "midpoint", chunk: int | None = None, strategy: str = "auto",
                        max_positions: int = MAX_POSITIONS, score: str = "logit", tolerance: float | None = None,
                        max_steps: int = 800) -> SpatialAttribution:
    """Where, at ``source_layer``, the evidence for ``target`` lies.

    ``target``: a class (name or index; or two classes for "a over b") -> a map over the source positions;
    or a later layer's name -> for every position of that layer, a map over the source positions. That costs one
    backward pass per position of the later layer (times ``steps`` forward passes for ``path``): a later layer
    with more than ``max_positions`` positions raises :class:`~blocklens.errors.CostError` before any work.
    For a class target, ``score`` is ``logit`` or ``logprob``, and ``method="path"`` with a ``tolerance``
    doubles the steps until the completeness gap is below it (as :func:`channel_attribution`).
    """
    src = spatial_layer(model, source_layer, "spatial attribution")
    target_layer = _as_layer(model, target)
    if target_layer is not None:
        check_positions(spatial_layer(model, target_layer, "layer-to-layer attribution"), max_positions,
                        "layer-to-layer attribution runs one backward pass per position of the later layer",
                        "max_positions")
    prep = prepare(model, image)
    if target_layer is None:
        idx = class_indices(model, target)
        fn = class_score(idx, score)
        lg = layer_gradients(model, prep.x, src.name, fn, method, steps, rule, chunk or 16)
        while method == "path" and tolerance is not None and lg.gap > tolerance and lg.steps * 2 <= max_steps:
            lg = layer_gradients(model, prep.x, src.name, fn, method, lg.steps * 2, rule, chunk or 16)
        maps = lg.product.sum(0).double().cpu().numpy()
        return SpatialAttribution(source=src.name, target=" - ".join(model.labels[i] for i in idx),
                                  target_kind="class", method=method, maps=maps, steps=lg.steps, classes=idx,
                                  score=pair_score_name(idx, score), score_value=lg.score, baseline=lg.baseline,
                                  gap=lg.gap)
    dst = spatial_layer(model, target_layer, "layer-to-layer attribution")
    if dst.order <= src.order:
        raise BlocklensError(f"the target layer {dst.name!r} must come after the source layer {src.name!r} "
                             "in the forward pass")
    maps = layer_to_layer(model, prep, src.name, dst.name, method, steps, rule, chunk or 64, strategy)
    return SpatialAttribution(src.name, dst.name, "layer", method, maps, steps if method == "path" else 1,
                              score="norm")


def _as_layer(model, target) -> str | None:
    if isinstance(target, str) and not target.strip().isdigit():
        from ..errors import UnknownNameError

        try:
            return model.layer(target).name
        except UnknownNameError:
            return None
    return None


def layer_to_layer(model, prep: Prepared, source: str, target: str, method: str = "linear", steps: int = 50,
                   rule: str = "midpoint", chunk: int = 64, strategy: str = "auto") -> np.ndarray:
    """(H2, W2, H1, W1): for every position p of ``target``, ``sum_c A1 * d||A2[:, p]|| / dA1``.

    Two exact strategies, equal to 1e-5:

    ``batched``
        the source activation is repeated once per (position, alpha) pair as one batch (``chunk`` at a time);
        element i scores only its own position, so one backward pass through the sum gives every position's
        gradient. Only the network between the two layers runs on the batch; the forward stops at ``target``.
        This is what a GPU wants.
    ``loop``
        one forward pass per chunk of alphas, then one backward pass per target position through the retained
        graph. On a CPU this does the fewest operations and is the fastest (``bench/bench_attribution.py``:
        batching brings no parallelism a 2-core CPU can use, and costs an extra forward per position).
    ``auto`` picks ``batched`` on CUDA and ``loop`` elsewhere.
    """
    _check_method(method, steps)
    if strategy == "auto":
        strategy = "batched" if prep.x.is_cuda else "loop"
    if strategy not in ("batched", "loop"):
        raise BlocklensError(f"unknown strategy {strategy!r}; choose 'auto', 'batched' or 'loop'")
    with torch.no_grad(), model.probe([source, target]) as probe:
        probe.run(prep.x)
    a1 = probe.activations[source][0]
    h2, w2 = probe.activations[target].shape[-2:]
    n_pos = h2 * w2
    alphas = (torch.ones(1) if method == "linear" else alphas_for(steps, rule)).to(a1)
    # the maps are linear in the gradient, so each gradient is folded into its (H1, W1) map at once: memory
    # grows with positions x source positions, not positions x source activations
    a1d = a1.double()
    maps = torch.zeros((n_pos, *a1.shape[-2:]), dtype=torch.float64, device=a1.device)
    if strategy == "batched":
        pos = torch.arange(n_pos).repeat_interleave(len(alphas))  # (position, alpha) pairs
        alp = alphas.repeat(n_pos)
        for start in range(0, len(pos), chunk):
            p, al = pos[start:start + chunk], alp[start:start + chunk]
            scaled = (al.view(-1, 1, 1, 1) * a1).requires_grad_(True)
            _, acts = run_replaced(model, prep.x, source, scaled, [target], stop=True, grad=True)
            a2 = acts[target].flatten(2)  # (n, C2, P)
            score = a2[torch.arange(len(p)), :, p].norm(dim=1).sum()
            (g,) = torch.autograd.grad(score, scaled)
            maps.index_add_(0, p.to(maps.device), (g.double() * a1d).sum(1))
    else:
        for start in range(0, len(alphas), chunk):
            al = alphas[start:start + chunk]
            scaled = (al.view(-1, 1, 1, 1) * a1).requires_grad_(True)
            _, acts = run_replaced(model, prep.x, source, scaled, [target], stop=True, grad=True)
            norms = acts[target].flatten(2).norm(dim=1)  # (n, P)
            for p in range(n_pos):
                (g,) = torch.autograd.grad(norms[:, p].sum(), scaled, retain_graph=p < n_pos - 1)
                maps[p] += (g.double().sum(0) * a1d).sum(0)
    maps /= len(alphas)
    return maps.reshape(h2, w2, *a1.shape[-2:]).cpu().numpy()
