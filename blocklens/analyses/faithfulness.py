"""Faithfulness: does an attribution predict what removing the thing it credits does?

Every attribution the library shows is a claim of the form "this group / channel / position carries this much
evidence for the score". This module checks the claim against interventions: the thing is removed from the
layer's activations and the rest of the network is run (:func:`~.interventions.run_replaced`, many interventions
as one batch from the layer on), and the drop of the score is compared with the attribution.

Scores (:func:`score_fn`), named the same everywhere:

``logit``
    the class's logit;
``logprob``
    its log-probability, ``logit - logsumexp(logits)``: it also falls when the other classes rise;
``pair``
    ``logit(a) - logit(b)`` for two classes (equal to the difference of their log-probabilities).

Removal: an element is removed by setting it to zero (the attribution baseline of the ``path`` method); for a
group, its exact share of the activations (:func:`~.factorize.split_activations`) is subtracted.

Checks:

- :func:`removal_effects`: ``score(A) - score(A - part_i)`` for a batch of parts (the "ablation" attribution);
- :func:`group_faithfulness`: Spearman rank correlation and top-1 agreement between a group attribution and
  the removal effects, plus two non-circular checks of the removal effects themselves: *restore* (the score
  gained by putting only group g back into otherwise removed activations, ``score(g alone) - score(0)``) and
  *additivity* (the per-group effects against removing all groups at once);
- :func:`channel_deletion`: remove the top-k attributed channels vs k random ones, a deletion curve and its
  area;
- :func:`spatial_deletion`: remove (or insert) positions most-attributed first vs in random order, curves and
  areas.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .common import to_jsonable
from .factorize import split_activations
from .interventions import class_score, layer_activation, removal_effects, run_batch, scores_of  # noqa: F401 (re-exported)

def score_fn(score: str, classes: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """logits (B, K) -> (B,) for ``score`` in :data:`~.interventions.SCORES` of ``classes`` (one class; two: ``pair``)."""
    return class_score([int(c) for c in classes], score)


def rank_correlation(a, b) -> float:
    """Spearman rank correlation of two vectors (nan when either is constant): the Pearson correlation of their
    ranks, ties given their average rank (as ``scipy.stats.spearmanr``, which is not a dependency)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing their average rank."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


# -- groups --------------------------------------------------------------------------------------------------
@dataclass
class GroupFaithfulness:
    """How well ``attribution`` (k,) of the groups predicts ``removal`` (k,), the score's drop when each group's
    share is removed; ``restore``: the score gained from zero by each group's share alone; ``remove_all``: the
    drop when every group is removed (compare ``removal.sum()``)."""

    layer: str
    class_index: int
    score: str
    method: str
    attribution: np.ndarray
    removal: np.ndarray
    restore: np.ndarray
    remove_all: float
    rank_correlation: float
    top_agrees: bool
    restore_correlation: float
    restore_top_agrees: bool

    @property
    def additivity(self) -> float:
        """sum of the per-group removal effects over the effect of removing all groups (1: they add up)."""
        return float(self.removal.sum() / self.remove_all) if self.remove_all else float("nan")

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("layer", "class_index", "score", "method", "attribution", "removal",
                                           "restore", "remove_all", "rank_correlation", "top_agrees",
                                           "restore_correlation", "restore_top_agrees")}
        d["additivity"] = self.additivity
        return to_jsonable(d)


def group_parts(act: np.ndarray, groups) -> np.ndarray:
    parts, _ = split_activations(act, groups.spatial, groups.channel_nonneg, groups.signed)
    return parts


def group_interventions(model, x, groups, classes: Sequence[int], score: str = "logit",
                        act: torch.Tensor | None = None) -> dict:
    """Removal and restore effects of every group for every class from one batch of ``2k + 2`` variants:
    ``removal`` (k, n) = score(A) - score(A - A_g); ``restore`` (k, n) = score(A_g) - score(0);
    ``remove_all`` (n,) = score(A) - score(A - sum_g A_g)."""
    act = layer_activation(model, x, groups.layer) if act is None else act
    parts = torch.as_tensor(group_parts(act.double().cpu().numpy(), groups), dtype=act.dtype, device=act.device)
    zero = torch.zeros_like(act)
    variants = torch.cat([act[None], act[None] - parts, parts, zero[None], (act - parts.sum(0))[None]])
    s = scores_of(run_batch(model, x, groups.layer, variants), classes, score).double().cpu().numpy()
    k = parts.shape[0]
    full, removed, alone, empty, rest = s[0], s[1:1 + k], s[1 + k:1 + 2 * k], s[1 + 2 * k], s[2 + 2 * k]
    return {"removal": full[None] - removed, "restore": alone - empty[None], "remove_all": full - rest}


def group_faithfulness(model, x, groups, attribution: np.ndarray, class_index: int, *, score: str = "logit",
                       method: str = "linear", interventions: dict | None = None) -> GroupFaithfulness:
    """Compare a group attribution ``(k,)`` for ``class_index`` with the removal effects (see module doc)."""
    iv = interventions or group_interventions(model, x, groups, [class_index], score)
    j = 0 if interventions is None else list(groups.classes).index(class_index)
    removal, restore, remove_all = iv["removal"][:, j], iv["restore"][:, j], float(iv["remove_all"][j])
    attribution = np.asarray(attribution, dtype=np.float64)
    return GroupFaithfulness(
        layer=groups.layer, class_index=int(class_index), score=score, method=method, attribution=attribution,
        removal=removal, restore=restore, remove_all=remove_all,
        rank_correlation=rank_correlation(attribution, removal),
        top_agrees=bool(np.argmax(attribution) == np.argmax(removal)),
        restore_correlation=rank_correlation(attribution, restore),
        restore_top_agrees=bool(np.argmax(attribution) == np.argmax(restore)))


# -- channels ------------------------------------------------------------------------------------------------
@dataclass
class ChannelDeletion:
    """Deleting channels (set to zero at every position) most-attributed first vs at random.

    ``ks``: how many channels are deleted; ``top`` (len(ks),): the score after deleting the top-k attributed
    channels; ``random`` (len(ks),): the mean score after deleting k random channels (``n_random`` draws);
    ``full``: the score with nothing deleted. ``area_*``: the mean of each curve's drop ``full - curve``.
    ``wins``: the top-k deletion drops the score more than the random one at ``k``."""

    layer: str
    score: str
    method: str
    classes: list[int]
    k: int
    ks: list[int]
    full: float
    top: np.ndarray
    random: np.ndarray
    full_prob: float | None = None
    top_prob: float | None = None
    random_prob: float | None = None
    channels: list[int] = field(default_factory=list)

    @property
    def area_top(self) -> float:
        return float(np.mean(self.full - self.top))

    @property
    def area_random(self) -> float:
        return float(np.mean(self.full - self.random))

    @property
    def drop_top(self) -> float:
        return float(self.full - self.top[self.ks.index(self.k)])

    @property
    def drop_random(self) -> float:
        return float(self.full - self.random[self.ks.index(self.k)])

    @property
    def wins(self) -> bool:
        return self.drop_top > self.drop_random

    def summary(self, label: str = "") -> str:
        """One sentence: ``"Removing the 8 channels with the most evidence for malamute takes it from 38% to 0%;
        8 random channels: 34%"`` (the class alone, whatever pair a view contrasts)."""
        what = f"the {self.k} channels with the most evidence for {label}" if label else f"these {self.k} channels"
        if self.full_prob is not None:
            return (f"Removing {what} takes {'it' if label else 'the class'} from {100 * self.full_prob:.0f}% to "
                    f"{100 * self.top_prob:.0f}%; {self.k} random channels: {100 * self.random_prob:.0f}%")
        return (f"Removing {what} lowers the score by {self.drop_top:.2f}; "
                f"{self.k} random channels: {self.drop_random:.2f}")

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("layer", "score", "method", "classes", "k", "ks", "full", "top", "random",
                                           "full_prob", "top_prob", "random_prob", "channels")}
        d.update(area_top=self.area_top, area_random=self.area_random, drop_top=self.drop_top,
                 drop_random=self.drop_random, wins=self.wins, summary=self.summary())
        return to_jsonable(d)


def channel_deletion(model, x, layer: str, values, classes: Sequence[int], *, score: str = "logit",
                     method: str = "linear", k: int = 8, ks: Sequence[int] | None = None, n_random: int = 8,
                     seed: int = 0, act: torch.Tensor | None = None) -> ChannelDeletion:
    """Delete the ``k`` (and every count in ``ks``) most-attributed channels of ``values`` (C,) against
    ``n_random`` random sets of as many channels; one batch of ``len(ks) * (1 + n_random) + 1`` variants."""
    act = layer_activation(model, x, layer) if act is None else act
    c = act.shape[0]
    ks = sorted({int(v) for v in (ks or [1, 2, 4, k, 2 * k])} | {int(k)})
    ks = [v for v in ks if 0 < v <= c]
    order = np.argsort(-np.asarray(values))
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(c) for _ in range(n_random)]
    masks = [np.ones(c)]
    for v in ks:
        m = np.ones(c); m[order[:v]] = 0; masks.append(m)
        for p in perms:
            m = np.ones(c); m[p[:v]] = 0; masks.append(m)
    masks = torch.as_tensor(np.stack(masks), dtype=act.dtype, device=act.device)
    out = run_batch(model, x, layer, act[None] * masks[:, :, None, None])
    s = score_fn(score, classes)(out).double().cpu().numpy()
    probs = None
    if len(classes) == 1:
        probs = torch.softmax(out.double(), 1)[:, int(classes[0])].cpu().numpy()
    rows = s[1:].reshape(len(ks), 1 + n_random)
    result = ChannelDeletion(layer=model.layer(layer).name, score=score, method=method,
                             classes=[int(v) for v in classes], k=int(k), ks=ks, full=float(s[0]), top=rows[:, 0],
                             random=rows[:, 1:].mean(1), channels=[int(v) for v in order[:k]])
    if probs is not None:
        pr = probs[1:].reshape(len(ks), 1 + n_random)
        i = ks.index(int(k))
        result.full_prob, result.top_prob, result.random_prob = float(probs[0]), float(pr[i, 0]), float(pr[i, 1:].mean())
    return result


# -- spatial maps --------------------------------------------------------------------------------------------
@dataclass
class SpatialDeletion:
    """Positions removed (all channels set to zero), most-attributed first vs in random order, in ``steps``
    equal fractions; and inserted into zero activations in the same orders. Curves are the score after each
    step (index 0: nothing removed / nothing inserted). Areas are the mean of the curves: a faithful map has a
    smaller deletion area and a larger insertion area than a random order. For one class the areas are those
    of the class's *probability* curves (the deletion / insertion metric of Petsiuk et al. 2018), which a few
    very negative log-probabilities cannot dominate; for a pair, of the score curves."""

    layer: str
    score: str
    method: str
    classes: list[int]
    fractions: np.ndarray
    deletion: np.ndarray
    deletion_random: np.ndarray
    insertion: np.ndarray
    insertion_random: np.ndarray
    deletion_prob: np.ndarray | None = None         # the class's probability along the curves (one class only)
    deletion_random_prob: np.ndarray | None = None
    insertion_prob: np.ndarray | None = None
    insertion_random_prob: np.ndarray | None = None

    def _area(self, name: str) -> float:
        prob = getattr(self, f"{name}_prob")
        return float(np.mean(prob if prob is not None else getattr(self, name)))

    @property
    def deletion_area(self) -> float:
        return self._area("deletion")

    @property
    def deletion_random_area(self) -> float:
        return self._area("deletion_random")

    @property
    def insertion_area(self) -> float:
        return self._area("insertion")

    @property
    def insertion_random_area(self) -> float:
        return self._area("insertion_random")

    @property
    def deletion_wins(self) -> bool:
        return self.deletion_area < self.deletion_random_area

    @property
    def insertion_wins(self) -> bool:
        return self.insertion_area > self.insertion_random_area

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("layer", "score", "method", "classes", "fractions", "deletion",
                                           "deletion_random", "insertion", "insertion_random", "deletion_prob",
                                           "deletion_random_prob", "insertion_prob", "insertion_random_prob")}
        d.update(deletion_area=self.deletion_area, deletion_random_area=self.deletion_random_area,
                 insertion_area=self.insertion_area, insertion_random_area=self.insertion_random_area,
                 deletion_wins=self.deletion_wins, insertion_wins=self.insertion_wins)
        return to_jsonable(d)


def spatial_deletion(model, x, layer: str, attribution_map, classes: Sequence[int], *, score: str = "logit",
                     method: str = "linear", steps: int = 8, n_random: int = 4, seed: int = 0,
                     act: torch.Tensor | None = None) -> SpatialDeletion:
    """Deletion and insertion curves of the map ``(H, W)`` against ``n_random`` random orders of the positions;
    one batch of ``2 * (steps + 1) * (1 + n_random)`` variants."""
    act = layer_activation(model, x, layer) if act is None else act
    h, w = act.shape[-2:]
    n = h * w
    order = np.argsort(-np.asarray(attribution_map).reshape(-1), kind="stable")
    rng = np.random.default_rng(seed)
    orders = [order] + [rng.permutation(n) for _ in range(n_random)]
    counts = np.round(np.linspace(0, n, steps + 1)).astype(int)
    masks = []
    for o in orders:
        for m_count in counts:  # deletion: keep all but the first m_count positions of the order
            m = np.ones(n); m[o[:m_count]] = 0; masks.append(m)
        for m_count in counts:  # insertion: only the first m_count positions
            m = np.zeros(n); m[o[:m_count]] = 1; masks.append(m)
    masks = torch.as_tensor(np.stack(masks), dtype=act.dtype, device=act.device).view(-1, 1, h, w)
    out = run_batch(model, x, layer, act[None] * masks)
    s = score_fn(score, classes)(out).double().cpu().numpy().reshape(len(orders), 2, steps + 1)
    result = SpatialDeletion(layer=model.layer(layer).name, score=score, method=method,
                             classes=[int(v) for v in classes], fractions=counts / n, deletion=s[0, 0],
                             deletion_random=s[1:, 0].mean(0), insertion=s[0, 1], insertion_random=s[1:, 1].mean(0))
    if len(classes) == 1:
        pr = torch.softmax(out.double(), 1)[:, int(classes[0])].cpu().numpy().reshape(len(orders), 2, steps + 1)
        result.deletion_prob, result.deletion_random_prob = pr[0, 0], pr[1:, 0].mean(0)
        result.insertion_prob, result.insertion_random_prob = pr[0, 1], pr[1:, 1].mean(0)
    return result


# -- what a view says about itself ---------------------------------------------------------------------------
_SCORE_WORDS = {"logit": "logit", "logprob": "log-probability", "pair": "logit difference"}
_METHOD_WORDS = {"linear": "activation × gradient", "path": "path from zero", "ablation": "measured removal effect"}


def describe(method: str, score: str) -> str:
    """A short phrase naming how numbers were computed: ``"activation × gradient of the log-probability"``."""
    return f"{_METHOD_WORDS.get(method, method)} of the {_SCORE_WORDS.get(score, score)}"


def layer_report(model, x, layer: str, cls: int, label: str, *, channel_values, channel_method: str,
                 spatial_map, spatial_method: str, groups, score: str, act: torch.Tensor | None = None,
                 k: int = 8, spatial_gap: float | None = None) -> dict:
    """The faithfulness figures of one layer's shown numbers for the class ``cls`` (one image), as plain JSON:
    ``channels`` (:class:`ChannelDeletion`, top-``k`` vs ``k`` random), ``spatial`` (:class:`SpatialDeletion`),
    ``groups`` (:class:`GroupFaithfulness` of ``groups``' attribution to ``cls``), and ``lines``: one sentence
    each, for the views. Costs about ``2k + 70`` forward passes from ``layer`` on (one batch each)."""
    act = layer_activation(model, x, layer) if act is None else act
    cd = channel_deletion(model, x, layer, channel_values, [cls], score=score, method=channel_method, k=k, ks=[k],
                          n_random=8, act=act)
    sd = spatial_deletion(model, x, layer, spatial_map, [cls], score=score, method=spatial_method, steps=8,
                          n_random=2, act=act)
    j = list(groups.classes).index(cls)
    iv = group_interventions(model, x, groups, [cls], score, act=act)
    gf = group_faithfulness(model, x, groups, groups.attribution[:, j], cls, score=score, method=groups.method,
                            interventions=iv)
    q = 2  # a quarter of the positions (steps=8)
    spatial_line = (f"Removing the quarter of positions this map ranks highest takes {label} from "
                    f"{100 * sd.deletion_prob[0]:.0f}% to {100 * sd.deletion_prob[q]:.0f}%; a random quarter: "
                    f"{100 * sd.deletion_random_prob[q]:.0f}% (deletion curve {'below' if sd.deletion_wins else 'NOT below'}"
                    f" random)." + (f" Path completeness gap {100 * spatial_gap:.0f}%." if spatial_gap is not None else ""))
    if groups.method == "ablation":
        group_line = (f"Each group's number is the measured drop of {label}'s {_SCORE_WORDS[score]} when its share "
                      f"of the activations is removed (exact by construction). Check: restoring each group alone "
                      f"ranks them with correlation {gf.restore_correlation:.2f}; the one-at-a-time drops add up to "
                      f"{100 * gf.additivity:.0f}% of removing all groups.")
    else:
        group_line = (f"Group numbers ({describe(groups.method, score)}) against the measured drop when each group "
                      f"is removed: rank correlation {gf.rank_correlation:.2f}, top group "
                      f"{'agrees' if gf.top_agrees else 'does NOT agree'}.")
    return to_jsonable({
        "class": int(cls), "label": label, "score": score,
        "channels": cd.to_json(), "spatial": sd.to_json(), "groups": gf.to_json(),
        "lines": {"channels": cd.summary(label) + ".", "spatial": spatial_line, "groups": group_line},
    })
