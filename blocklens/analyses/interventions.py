"""Interventions: the network run on from a layer with that layer's activations replaced, and the class scores read.

The faithfulness checks, the path attribution and the "ablation" attribution of groups all rest on these:
:func:`run_replaced` runs many variants of one layer as one batch (the image enters once), and
:func:`scores_of` / :func:`class_score` name what is explained (:data:`SCORES`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import BlocklensError

#: What is explained: a class's ``logit``, its log-probability ``logprob`` (``logit - logsumexp(logits)``), or, for
#: two classes, ``pair`` = ``logit(a) - logit(b)`` (which equals the difference of their log-probabilities).
SCORES = ("logit", "logprob", "pair")


def scores_of(out: torch.Tensor, classes: Sequence[int], score: str) -> torch.Tensor:
    """(B, K) logits -> (B, n) the score of each of ``classes``: its ``logit`` or its ``logprob``."""
    idx = torch.as_tensor([int(c) for c in classes], device=out.device)
    vals = out[:, idx]
    if score == "logprob":
        vals = vals - torch.logsumexp(out, dim=1, keepdim=True)
    elif score != "logit":
        raise BlocklensError(f"per-class scores are 'logit' or 'logprob', not {score!r}")
    return vals


def class_score(classes: Sequence[int], score: str = "logit") -> Callable[[torch.Tensor], torch.Tensor]:
    """logits (B, K) -> (B,): the ``score`` (:data:`SCORES`) of one class, or the first minus the second (two
    classes: always ``pair``, the same for logits and log-probabilities)."""
    if score not in SCORES:
        raise BlocklensError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    if len(classes) == 1 and score != "pair":
        (a,) = (int(c) for c in classes)
        return lambda out: scores_of(out, [a], score)[:, 0]
    if len(classes) == 2:
        a, b = (int(c) for c in classes)
        return lambda out: out[:, a] - out[:, b]
    if score == "pair":
        raise BlocklensError(f"the 'pair' score needs two classes, got {len(classes)}")
    raise BlocklensError(f"give one class or two (their difference is explained), not {len(classes)}")


def pair_score_name(classes: Sequence[int], score: str) -> str:
    """The name of the score a result of ``classes`` explains: ``pair`` for two classes."""
    return "pair" if len(classes) == 2 else score


def run_replaced(model, x: torch.Tensor, source: str, replacement: torch.Tensor, layers: Sequence[str] = (),
                 stop: bool = False, grad: bool = False):
    """Run the one image ``x`` with ``source``'s output replaced by ``replacement`` (a batch of n variants of
    it); returns ``(output or None, activations of layers)``, kept in the graph with ``grad=True``.

    Only the part after ``source`` runs n times: the image enters once and the batch grows at ``source``
    (anything from before it broadcasts against the batch, as in a residual add). Should a model refuse that
    (a concatenation across the boundary, say), the image is repeated n times instead.
    """
    names = list(dict.fromkeys([*layers, source]))
    for inputs in (x, x.expand(replacement.shape[0], *x.shape[1:])):
        try:
            with model.probe(names, grad=grad, edit={source: lambda t: replacement}) as p:
                out = p.run(inputs, stop=stop)
            return out, {n: p.activations[n] for n in layers}
        except RuntimeError:
            if inputs is not x or replacement.shape[0] == 1:
                raise
    raise AssertionError("unreachable")


@torch.no_grad()
def run_batch(model, x: torch.Tensor, layer: str, variants: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Logits ``(n, K)`` of the network run from ``layer`` on ``variants`` ``(n, C, H, W)`` (``chunk`` at a
    time), the image ``x`` entering once per chunk."""
    outs = []
    for start in range(0, variants.shape[0], chunk):
        out, _ = run_replaced(model, x, layer, variants[start:start + chunk])
        outs.append(out.detach())
    return torch.cat(outs)


@torch.no_grad()
def layer_activation(model, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The one image's activation at ``layer`` (canonical ``(C, H, W)``)."""
    return model.activations(x, layer)[layer][0]


def removal_effects(model, x: torch.Tensor, layer: str, parts, classes: Sequence[int], score: str = "logit",
                    act: torch.Tensor | None = None, chunk: int = 64) -> np.ndarray:
    """``(n_parts, n_classes)``: ``score(A) - score(A - part_i)`` for each part, every class from the same
    forward passes (one batch of ``n_parts + 1`` variants from ``layer`` on)."""
    act = layer_activation(model, x, layer) if act is None else act
    parts = torch.as_tensor(np.asarray(parts), dtype=act.dtype, device=act.device)
    variants = torch.cat([act[None], act[None] - parts])
    s = scores_of(run_batch(model, x, layer, variants, chunk), classes, score).double().cpu().numpy()
    return s[0][None] - s[1:]
