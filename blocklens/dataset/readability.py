"""How readable a unit is, measured by a machine: two-alternative trials in the spirit of Zimmermann et al.,
"Measuring Mechanistic Interpretability at Scale Without Humans" (NeurIPS 2024).

A *unit* (a channel, a dictionary atom, any direction) is given as ranked patches of a folder's images: its ``top``
patches (where it is highest, best first), its ``bottom`` patches (where it is lowest) and ``random`` patches. A
*trial* holds out one top patch (query A) and one bottom or random patch (query B); the unit's other top patches are
the references. A *judge* embeds every patch (:class:`Judge`: a model's features at a layer, the patch resized to
its input) and picks the query whose mean cosine similarity to the references is higher (a tie counts half); the
trial is correct when it picks the top patch. A unit's score is its share of correct trials; the score of a set of
units pools their trials: ``score`` with its binomial standard error ``se`` (trials taken as independent) and
``se_units`` (the spread of the units' own scores over their number: trials of one unit share patches, so this is
the honest one when units differ). Chance is 0.5: a unit whose top patches look alike, and unlike its bottom ones, to
the judge scores near 1.

Each unit's trials are distinct (top, contrast) pairs drawn without replacement (seeded); every patch is cut from
its image once, in the model's input frame (the boxes of :class:`~blocklens.dataset.concepts.ConceptExample`), and
embedded once however many units share it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import BlocklensError

__all__ = ["Patch", "Unit", "Judge", "Readability", "readability", "pooled", "CONTRASTS"]

CONTRASTS = ("bottom", "random")
JUDGE_SIZE = 128      # the judge's input side: about a blocks.11 patch's own size (138 px) on Lite0, 7x cheaper than 224


@dataclass(frozen=True)
class Patch:
    """A box ``(x0, y0, x1, y1)`` of one image, in the model's input frame (the resized centre crop); ``path``
    relative to the folder given to :func:`readability` (or absolute)."""

    path: str
    box: tuple[int, int, int, int]


@dataclass
class Unit:
    """One unit's patches: ``top`` (best first), ``bottom`` (lowest first) and ``random``."""

    name: str
    top: list[Patch]
    bottom: list[Patch] = field(default_factory=list)
    random: list[Patch] = field(default_factory=list)


class Judge:
    """A model's features as the judge: each patch resized to ``size`` px (bilinear), run through ``model`` up to
    ``layer`` (default: the layer before the last, a classifier's pooled features), averaged over positions when the
    layer has them, as one vector. ``batch`` patches per forward pass."""

    def __init__(self, model: Any, layer: str | None = None, size: int = JUDGE_SIZE, batch: int = 64):
        names = [i.name for i in model.layers]
        if layer is None and len(names) < 2:
            raise BlocklensError(f"{model.name} has {len(names)} layer(s): name the judge's layer")
        self.model, self.layer = model, model.layer(layer if layer is not None else names[-2]).name
        self.size, self.batch = int(size), int(batch)

    def describe(self) -> str:
        return f"{self.model.name} {self.layer} features of each patch at {self.size} px"

    def __call__(self, pictures: Sequence[Image.Image]) -> torch.Tensor:
        """``(n, d)`` unit-norm features of ``pictures`` (float32, on the CPU)."""
        out = []
        for i in range(0, len(pictures), self.batch):
            x = torch.stack([torch.from_numpy(np.asarray(p.convert("RGB").resize((self.size, self.size),
                                                                                   Image.BILINEAR), np.float32))
                             for p in pictures[i:i + self.batch]]).permute(0, 3, 1, 2) / 255.0
            x = self.model.input_from_rgb(x.to(self.model.device))
            f = self.model.activations(x, [self.layer])[self.layer].float()
            f = f.flatten(2).mean(2) if f.dim() > 2 else f
            out.append(torch.nn.functional.normalize(f, dim=1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 1)


@dataclass
class Readability:
    """The score of a set of units against one ``contrast`` (``bottom`` or ``random``): ``score`` (share of
    ``trials`` correct; ``correct``), ``se`` (binomial), ``se_units`` (over the ``units`` scored), ``per_unit``
    (unit name -> its score), ``skipped`` (units with too few patches for a trial), ``chance`` (0.5), the ``judge``."""

    contrast: str
    score: float
    se: float
    se_units: float
    trials: int
    correct: float
    units: int
    per_unit: dict[str, float]
    skipped: list[str]
    judge: str
    chance: float = 0.5
    outcomes: dict[str, np.ndarray] = field(default_factory=dict, repr=False)   # per unit: 1, 0 or 0.5 per trial

    def subset(self, names: Iterable[str]) -> "Readability":
        """The figures of some of the units only (the same trials, pooled again)."""
        keep = set(names)
        return pooled(self.contrast, {k: v for k, v in self.outcomes.items() if k in keep},
                      [s for s in self.skipped if s in keep], self.judge)

    def to_json(self, per_unit: bool = False) -> dict:
        d = {"contrast": self.contrast, "score": round(self.score, 4), "se": round(self.se, 4),
             "se_units": round(self.se_units, 4), "trials": self.trials, "units": self.units,
             "skipped": len(self.skipped), "chance": self.chance, "judge": self.judge}
        if per_unit:
            d["per_unit"] = {k: round(v, 4) for k, v in self.per_unit.items()}
        return d

    def line(self) -> str:
        return (f"{self.score:.3f} ± {self.se_units:.3f} (binomial ± {self.se:.3f}; {self.trials} trials over "
                f"{self.units} units)")


def pooled(contrast: str, outcomes: dict[str, np.ndarray], skipped: list[str], judge: str) -> Readability:
    """A :class:`Readability` from each unit's trial outcomes."""
    every = np.concatenate(list(outcomes.values())) if outcomes else np.zeros(0)
    n = len(every)
    score = float(every.mean()) if n else float("nan")
    scores = np.asarray([float(v.mean()) for v in outcomes.values()])
    return Readability(
        contrast=contrast, score=score, se=math.sqrt(score * (1 - score) / n) if n else float("nan"),
        se_units=float(scores.std(ddof=1) / math.sqrt(len(scores))) if len(scores) > 1 else float("nan"),
        trials=n, correct=float(every.sum()), units=len(outcomes),
        per_unit={k: float(v.mean()) for k, v in outcomes.items()}, skipped=list(skipped), judge=judge,
        outcomes=dict(outcomes))


def _embed(patches: list[Patch], root: Path | None, model, judge, chunk: int = 256) -> torch.Tensor:
    """``(n, d)`` unit-norm judge features of ``patches`` (in order, sorted by image so each image is decoded once),
    cut and embedded ``chunk`` at a time."""
    feats = []
    frame: tuple[str, Image.Image] | None = None
    for i in range(0, len(patches), chunk):
        pictures = []
        for p in patches[i:i + chunk]:
            if frame is None or frame[0] != p.path:
                frame = (p.path, model.prepare(root / p.path if root is not None else Path(p.path))[1])
            pictures.append(frame[1].crop(tuple(int(v) for v in p.box)))
        feats.append(torch.as_tensor(judge(pictures), dtype=torch.float32).cpu())
    return torch.nn.functional.normalize(torch.cat(feats), dim=1) if feats else torch.zeros(0, 1)


def _trials(top: torch.Tensor, other: torch.Tensor, n: int, rng: np.random.Generator) -> np.ndarray:
    """Outcomes (1, 0 or 0.5 for a tie) of ``n`` distinct trials of one unit; ``top`` (k, d), ``other`` (m, d)."""
    k, m = len(top), len(other)
    pairs = rng.permutation(k * m)[:n]
    sim_top = top @ top.T                                                  # (k, k)
    ref_mean = (sim_top.sum(1) - sim_top.diagonal()) / (k - 1)             # query A's mean to the other k-1
    cross = (other @ top.T).numpy()                                        # (m, k)
    out = np.empty(len(pairs))
    for t, pair in enumerate(pairs):
        i, j = divmod(int(pair), m)
        a = float(ref_mean[i])
        b = float((cross[j].sum() - cross[j, i]) / (k - 1))
        out[t] = 1.0 if a > b else 0.0 if a < b else 0.5
    return out


def readability(model: Any, units: Sequence[Unit], judge: Judge | Callable | None = None, trials: int = 20,
                contrasts: Sequence[str] = CONTRASTS, root: str | Path | None = None, seed: int = 0,
                min_top: int = 3) -> dict[str, Readability]:
    """The readability of ``units`` (see the module docstring) against each of ``contrasts`` (``"bottom"``,
    ``"random"``): ``{contrast: Readability}``. ``model`` cuts the patches (its input frame: ``model.prepare``);
    ``judge``: a :class:`Judge` (default: ``Judge(model)``, the model's own penultimate features: name another
    model's when there is one, since a judge that shares the analysed layer's weights is not independent of it) or
    any callable from a list of pictures to ``(n, d)`` features; ``trials`` per unit (fewer when the unit has fewer
    distinct pairs); a unit with fewer than ``min_top`` top patches or no contrast patch is skipped."""
    bad = [c for c in contrasts if c not in CONTRASTS]
    if bad or not contrasts:
        raise BlocklensError(f"unknown contrast {bad[0] if bad else None!r}: one or more of {', '.join(CONTRASTS)}")
    if min_top < 2:
        raise BlocklensError(f"min_top={min_top}: a trial needs a held-out top patch and at least one reference")
    if trials < 1:
        raise BlocklensError(f"trials must be at least 1, got {trials}")
    judge = judge if judge is not None else Judge(model)
    root = Path(root) if root is not None else None
    patches = sorted({p for u in units for c in ("top", *contrasts) for p in getattr(u, c)},
                     key=lambda p: (p.path, p.box))
    where = {p: i for i, p in enumerate(patches)}
    try:
        feats = _embed(patches, root, model, judge)
    except (OSError, BlocklensError) as e:
        raise BlocklensError(f"cannot cut a patch for the readability trials (folder {root}): {e}") from e
    name = judge.describe() if hasattr(judge, "describe") else getattr(judge, "__name__", type(judge).__name__)
    out = {}
    for ci, contrast in enumerate(contrasts):
        rng = np.random.default_rng([seed, ci])
        outcomes, skipped = {}, []
        for u in units:
            other = getattr(u, contrast)
            if len(u.top) < min_top or not other:
                skipped.append(u.name)
                continue
            outcomes[u.name] = _trials(feats[[where[p] for p in u.top]], feats[[where[p] for p in other]], trials, rng)
        out[contrast] = pooled(contrast, outcomes, skipped, name)
    return out
