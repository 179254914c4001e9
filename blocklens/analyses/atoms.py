"""One image read in the atoms of a concept dictionary: which atoms fire where, and how much each carries to a class.

A concept dictionary (:mod:`blocklens.dataset.dictionary`) learns ``K`` atoms over every position of a layer across a
folder. For one image, its :class:`~blocklens.dataset.dictionary.codebook.Codebook` gives

- the **codes** ``(H, W, K)`` >= 0: how much of each atom every position holds; the top few per position are the
  *semantic dictionary in atoms* (the article's semantic dictionary, with learned atoms in place of channels);
- the **reconstruction** ``R = sum_k code_k (outer) d_k`` ``(C, H, W)``, ``d_k`` atom ``k``'s direction in the
  layer's channel space (for a signed layer, fitted over ``[relu(A), relu(-A)]``, the positive part minus the
  negative one: :attr:`~blocklens.dataset.dictionary.codebook.Codebook.directions`).

**Attribution to atoms** (linear, gradient x activation), with ``G = d score / d A`` of each class (``score`` its
``logit`` or ``logprob``): each atom's code times the gradient along its direction, and the residual the same for
what the reconstruction leaves::

    attribution[k, class] = sum_pos code_k(pos) * <G_class(pos), d_k>      residual[class] = sum((A - R) * G_class)
    sum_k attribution[k, class] + residual[class] == whole[class] == sum(A * G_class)

so the residual is the evidence outside the dictionary's reach on this image (``relative_error`` ``|A - R| / |A|``
says how much of the activation that is).

Each atom's **share** of the activations ``A_k`` (the exact split of
:meth:`~blocklens.dataset.dictionary.codebook.Codebook.shares`: every element divided among the atoms in proportion
to what each reconstructs there, ``relu(A)`` and ``relu(-A)`` separately for a signed layer) never leaves the
activations' range; it is what the removal check removes, as the dictionary's own removals do, and
``share_attribution[k, class] = sum(A_k * G_class)`` (with ``share_residual`` the elements no atom reconstructs at
all: they too add up to ``whole``) is its linear prediction. The split hands the reconstruction error to the atoms in
proportion, which is why the shown numbers are the reconstruction's.

**Removal check** (as the groups view's, :mod:`.faithfulness`): the ``check`` atoms with the largest attribution
(in size) to each class have their share removed one at a time, ``score(A) - score(A - A_k)`` measured from the
layer on (one batch for every class), and compared with the attribution (and with ``share_attribution``): Spearman
rank correlation, whether the top atom agrees, and the sum of the predicted drops against the measured ones. Removing the ``together`` atoms
with the most positive attribution at once gives the class's probability before and after.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import BlocklensError
from .attribution import class_gradients
from .common import class_indices, prepare, spatial_layer, to_jsonable
from .faithfulness import rank_correlation
from .interventions import run_batch, scores_of

TOP_PER_POSITION = 4   # atoms shown at each position of the semantic dictionary in atoms
CHECK = 12             # atoms removed one at a time per class (the largest attributions in size)
TOGETHER = 3           # atoms with the most positive attribution removed at once per class
CHUNK = 32             # atoms whose shares are held at once while attributing


@dataclass(repr=False)
class AtomAttribution:
    """One image at the dictionary's layer (``K`` atoms, ``n`` classes, layer grid ``C x H x W``).

    ``removal[j]`` is the removal check of class ``classes[j]`` (plain JSON, see :func:`atom_attribution`)."""

    layer: str
    key: str                     # the dictionary's key
    method: str                  # the dictionary's method (nmf or sae)
    codes: np.ndarray            # (H, W, K) float32 >= 0
    top_atoms: np.ndarray        # (H, W, t) int: each position's atoms by code, largest first (-1: none)
    top_codes: np.ndarray        # (H, W, t) float32: their codes
    classes: list[int]
    labels: list[str]
    attribution: np.ndarray      # (K, n) float64
    residual: np.ndarray         # (n,) float64: sum((A - R) * G), what the reconstruction leaves
    whole: np.ndarray            # (n,) float64: sum(A * G), the layer's linear attribution
    share_attribution: np.ndarray  # (K, n) float64: sum(A_k * G), each atom's exact share
    share_residual: np.ndarray   # (n,) float64: the elements no atom reconstructs at all
    scores: np.ndarray           # (n,) float64: each class's score on this image
    relative_error: float        # |A - R| / |A| on this image
    score: str = "logprob"
    removal: list[dict] = field(default_factory=list)

    @property
    def k(self) -> int:
        return int(self.codes.shape[2])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape[:2])

    @property
    def adds_up(self) -> np.ndarray:
        """``(n,)`` relative error of ``sum_k attribution + residual`` against ``whole`` (the same for the shares
        is :meth:`shares_add_up`)."""
        return self._gap(self.attribution, self.residual)

    def shares_add_up(self) -> np.ndarray:
        return self._gap(self.share_attribution, self.share_residual)

    def _gap(self, attribution, residual) -> np.ndarray:
        total = attribution.sum(0) + residual
        return np.abs(total - self.whole) / np.maximum(np.abs(self.whole), 1e-12)

    def ranked(self, cls) -> list[tuple[int, float]]:
        """``(atom, attribution)`` for the class ``cls`` (index into the model's classes), largest first."""
        j = self.classes.index(int(cls))
        order = np.argsort(-self.attribution[:, j], kind="stable")
        return [(int(a), float(self.attribution[a, j])) for a in order]

    def __repr__(self) -> str:
        h, w = self.shape
        return (f"<AtomAttribution {self.key} at {self.layer!r}: {self.k} atoms on {h}x{w}, "
                f"{len(self.classes)} classes, rel. error {self.relative_error:.3f}>")

    def used_atoms(self) -> list[int]:
        """The atoms a view shows: those at the top of some position, and each class's ``CHECK`` largest."""
        used = {int(a) for a in np.unique(self.top_atoms) if a >= 0}
        for j in range(len(self.classes)):
            used |= {int(a) for a in np.argsort(-np.abs(self.attribution[:, j]), kind="stable")[:CHECK]}
        return sorted(used)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON; ``maps`` holds the codes ``(H, W)`` of the atoms a view shows (:meth:`used_atoms`)."""
        used = self.used_atoms()
        return to_jsonable({
            "layer": self.layer, "key": self.key, "method": self.method, "shape": list(self.shape), "k": self.k,
            "top_atoms": self.top_atoms, "top_codes": np.round(self.top_codes, 4),
            "maps": {str(a): np.round(self.codes[:, :, a], 4) for a in used},
            "classes": [int(c) for c in self.classes], "labels": list(self.labels),
            "attribution": self.attribution, "residual": self.residual, "whole": self.whole,
            "share_attribution": self.share_attribution, "share_residual": self.share_residual,
            "scores": self.scores, "relative_error": self.relative_error,
            "adds_up": self.adds_up, "score": self.score, "removal": self.removal,
        })


def _check_codebook(codebook, info) -> None:
    for need in ("encode_acts", "shares", "atoms", "channels", "signed"):
        if not hasattr(codebook, need):
            raise BlocklensError(f"atom_attribution needs a dictionary's codebook (with {need}), got "
                                 f"{type(codebook).__name__}")
    if int(codebook.channels) != info.channels:
        raise BlocklensError(f"the dictionary's atoms have {codebook.channels} channels but layer {info.name!r} has "
                             f"{info.channels}: a dictionary learned at another layer or model")


def atom_attribution(model, image, codebook, layer: str, *, classes: Sequence | None = None, top: int = 5,
                     score: str = "logprob", key: str = "", method: str | None = None,
                     per_position: int = TOP_PER_POSITION, check: int = CHECK, together: int = TOGETHER
                     ) -> AtomAttribution:
    """Read ``image`` at ``layer`` in the atoms of ``codebook`` (a concept dictionary's) and attribute ``classes``
    (default: the ``top`` predictions) to them; see the module docstring. ``score``: each class's ``logit`` or
    ``logprob``; ``per_position``: atoms kept per position; ``check`` / ``together``: the removal check's sizes.

    ``removal[j]``: ``{"class", "label", "atoms" (the checked atoms), "predicted" (their attribution),
    "actual" (the measured drop of the score when each is removed), "rank_correlation", "top_agrees",
    "predicted_share" and "share_rank_correlation" (the same for ``share_attribution``),
    "predicted_sum", "actual_sum", "together" (atoms removed at once), "prob", "prob_without" (the class's
    probability before and after removing them), "score_without"}``.
    One backward pass, and one batch of ``|union of checked atoms| + n + 1`` variants from the layer on.
    """
    info = spatial_layer(model, layer, "atom_attribution")
    _check_codebook(codebook, info)
    x = prepare(model, image).x
    if classes is not None:
        idx = class_indices(model, classes)
    else:
        idx = [p.index for p in model.predict(x, top=int(top))]
    act, grads, scores = class_gradients(model, x, info.name, idx, score)     # (C, H, W), (n, C, H, W), (n,)
    act, grads = act.detach(), grads.detach()
    c, h, w = act.shape
    t = codebook.tensors(act.device)
    with torch.no_grad():
        codes = codebook.encode_acts(act, t)                                  # (HW, K)
        k = codes.shape[1]
        g = grads.double()
        shares = torch.zeros((k, len(idx)), dtype=torch.float64, device=act.device)
        total = torch.zeros_like(act, dtype=torch.float64)
        for start in range(0, k, CHUNK):
            parts = codebook.shares(act, codes, range(start, min(k, start + CHUNK)), t).double()  # (m, C, H, W)
            shares[start:start + parts.shape[0]] = torch.einsum("mchw,nchw->mn", parts, g)
            total += parts.sum(0)
        a64 = act.double()
        share_residual = torch.einsum("chw,nchw->n", a64 - total, g)
        whole = torch.einsum("chw,nchw->n", a64, g)
        d = torch.as_tensor(np.asarray(codebook.directions), dtype=torch.float64, device=act.device)   # (K, C)
        c64 = codes.double()                                                                              # (HW, K)
        along = torch.einsum("kc,nchw->nkhw", d, g).flatten(2)                                            # (n, K, HW)
        attribution = torch.einsum("pk,nkp->kn", c64, along)
        recon = (c64 @ d).T.reshape(c, h, w)
        residual = torch.einsum("chw,nchw->n", a64 - recon, g)
        rel = float((a64 - recon).norm() / a64.norm().clamp(min=1e-30))
    codes_hw = codes.reshape(h, w, k).float().cpu().numpy()
    tops, top_codes = _per_position(codes_hw, per_position)
    result = AtomAttribution(
        layer=info.name, key=key, method=method or str(getattr(codebook, "method", "")), codes=codes_hw,
        top_atoms=tops, top_codes=top_codes, classes=idx, labels=[model.labels[i] for i in idx],
        attribution=attribution.cpu().numpy(), residual=residual.cpu().numpy(), whole=whole.cpu().numpy(),
        share_attribution=shares.cpu().numpy(), share_residual=share_residual.cpu().numpy(),
        scores=scores.double().cpu().numpy(), relative_error=rel, score=score)
    result.removal = _removal_check(model, x, info.name, act, codebook, codes, t, result, check, together)
    return result


def _finite(v: float) -> float | None:
    """``v``, or None for nan (a constant vector has no rank correlation; JSON has no nan)."""
    return None if np.isnan(v) else float(v)


def _per_position(codes: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each position's ``top`` atoms by code ``(H, W, t)`` and their codes; atoms with a zero code are ``-1``."""
    t = min(int(top), codes.shape[2])
    order = np.argsort(-codes, axis=2, kind="stable")[:, :, :t]
    vals = np.take_along_axis(codes, order, axis=2)
    return np.where(vals > 0, order, -1).astype(np.int64), np.where(vals > 0, vals, 0).astype(np.float32)


def _removal_check(model, x, layer: str, act, codebook, codes, t, r: AtomAttribution, check: int,
                   together: int) -> list[dict]:
    """The removal check of every class from one batch (see :func:`atom_attribution`)."""
    n = len(r.classes)
    checked = [[int(a) for a in np.argsort(-np.abs(r.attribution[:, j]), kind="stable")[:check]] for j in range(n)]
    joint = [[int(a) for a in np.argsort(-r.attribution[:, j], kind="stable")[:together]
              if r.attribution[a, j] > 0] for j in range(n)]
    union = sorted({a for row in checked for a in row} | {a for row in joint for a in row})
    pos = {a: i for i, a in enumerate(union)}
    with torch.no_grad():
        parts = codebook.shares(act, codes, union, t) if union else act.new_zeros((0, *act.shape))
        sets = [parts[[pos[a] for a in row]].sum(0) if row else torch.zeros_like(act) for row in joint]
        variants = torch.cat([act[None], act[None] - parts, act[None] - torch.stack(sets)])
        out = run_batch(model, x, layer, variants).double()
    s = scores_of(out, r.classes, r.score).cpu().numpy()                    # (1 + |union| + n, n)
    probs = torch.softmax(out, 1)[:, torch.as_tensor(r.classes)].cpu().numpy()
    full, single, joint_s = s[0], s[1:1 + len(union)], s[1 + len(union):]
    checks = []
    for j, c in enumerate(r.classes):
        rows = [pos[a] for a in checked[j]]
        predicted = r.attribution[checked[j], j]
        predicted_share = r.share_attribution[checked[j], j]
        actual = full[j] - single[rows, j]
        checks.append(to_jsonable({
            "class": int(c), "label": r.labels[j], "score": r.score, "atoms": checked[j],
            "predicted": predicted, "actual": actual,
            "rank_correlation": _finite(rank_correlation(predicted, actual)),
            "top_agrees": bool(len(rows) > 0 and np.argmax(predicted) == np.argmax(actual)),
            "predicted_share": predicted_share,
            "share_rank_correlation": _finite(rank_correlation(predicted_share, actual)),
            "predicted_sum": float(predicted.sum()), "actual_sum": float(actual.sum()),
            "together": joint[j], "prob": float(probs[0, j]), "prob_without": float(probs[1 + len(union) + j, j]),
            "score_without": float(joint_s[j, j]),
        }))
    return checks
