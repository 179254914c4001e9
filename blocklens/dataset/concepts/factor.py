"""Factorizing a class's sampled activations into concepts: how many (:func:`choose_k`), and the fit itself.

:func:`factorize` turns the scan's evidence-weighted sample of a class's positions into ``k`` non-negative
concepts (NMF of ``[relu(A), relu(-A)]`` for a signed layer), each folded back into a direction of the layer's
channel space; without ``k`` it is chosen by stability on resampled images (:data:`~.rules.K_RULE`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...analyses.factorize import fold, nmf_matrix
from ...errors import BlocklensError
from .rules import KS, STABLE

__all__ = ["Factors", "choose_k", "factorize"]


@dataclass
class Factors:
    """The fitted concepts: ``components`` ``(k, C')`` as fitted, ``directions`` ``(k, C)`` folded back to the
    layer's channels, the ``k_selection`` table (empty when ``k`` was given), the sample's size and the fit's
    relative reconstruction error."""

    k: int
    components: np.ndarray
    directions: np.ndarray
    k_selection: list[dict]
    rows: int
    columns: int
    signed: bool
    relative_error: float


def _reproduced(full: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each row of ``full`` ``(k, C')``, its best cosine with a row of ``other``."""
    fn = full / np.maximum(np.linalg.norm(full, axis=1, keepdims=True), 1e-12)
    on = other / np.maximum(np.linalg.norm(other, axis=1, keepdims=True), 1e-12)
    return (fn @ on.T).max(1)


def choose_k(matrix: np.ndarray, row_image: np.ndarray, ks: Sequence[int] = KS, resamples: int = 3,
             seed: int = 0, max_rows: int = 8000) -> tuple[int, list[dict]]:
    """The number of concepts (see the module docstring, step 2) and the table it was chosen from: per ``k`` the
    relative reconstruction error and the stability, the least reproduced concept's mean best cosine with the
    concepts fitted on ``resamples`` random 80% of the images. The chosen ``k`` is the largest whose every concept
    is reproduced (stability >= STABLE); failing that, the most stable one."""
    rng = np.random.default_rng(seed)
    if len(matrix) > max_rows:
        keep = np.sort(rng.choice(len(matrix), size=max_rows, replace=False))
        matrix, row_image = matrix[keep], row_image[keep]
    images = np.unique(row_image)
    subsets = [np.isin(row_image, rng.choice(images, size=max(1, int(0.8 * len(images))), replace=False))
               for _ in range(resamples)]
    table = []
    for k in ks:
        if k > min(matrix.shape) or any(k > min(int(m.sum()), matrix.shape[1]) for m in subsets):
            break
        _, h_all, err = nmf_matrix(matrix, k, max_iter=100)
        match = np.mean([_reproduced(h_all, nmf_matrix(matrix[m], k, max_iter=100)[1]) for m in subsets], axis=0)
        table.append({"k": k, "relative_error": round(err, 4), "stability": round(float(match.min()), 4)})
    if not table:
        raise BlocklensError(f"too few sampled positions ({matrix.shape[0]}) to choose a number of concepts")
    stable = [r for r in table if r["stability"] >= STABLE]
    chosen = stable[-1]["k"] if stable else max(table, key=lambda r: r["stability"])["k"]
    for r in table:
        r["chosen"] = r["k"] == chosen
    return chosen, table


def factorize(raw: np.ndarray, row_image: np.ndarray, signed: bool, channels: int, k: int | None, max_rows: int,
              seed: int) -> Factors:
    """NMF of the sampled rows ``raw`` ``(N, C)`` of the class's images (``row_image``: each row's image), at most
    ``max_rows`` of them (a seeded draw); ``k`` None: :func:`choose_k`."""
    raw = raw.astype(np.float64)
    rng = np.random.default_rng(seed)
    if len(raw) > max_rows:
        pick = np.sort(rng.choice(len(raw), size=max_rows, replace=False))
        raw, row_image = raw[pick], row_image[pick]
    matrix = np.concatenate([np.maximum(raw, 0), np.maximum(-raw, 0)], axis=1) if signed else raw
    if k is None:
        k, table = choose_k(matrix, row_image)
    else:
        k, table = int(k), []
        if k > min(matrix.shape):
            raise BlocklensError(f"k={k} is more concepts than the sample allows ({matrix.shape[0]} positions x "
                                 f"{matrix.shape[1]} columns); give a smaller k or more images")
    _, comps, rel_err = nmf_matrix(matrix, k)
    return Factors(k=k, components=comps, directions=fold(comps, channels), k_selection=table,
                   rows=int(matrix.shape[0]), columns=int(matrix.shape[1]), signed=signed, relative_error=rel_err)
