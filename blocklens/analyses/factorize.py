"""Matrix factorization of activations: a thin wrapper that flattens to (positions, channels), fits, reshapes.

NMF needs non-negative data. Post-ReLU layers are; a signed layer (a linear bottleneck such as EfficientNet's
block outputs) is factorized as ``[relu(A), relu(-A)]`` (its positive and negative parts as separate
channels, ``2C`` columns), and each group's channel factor is folded back into one signed direction
``positive part - negative part``. That treatment is reported in ``Factors.signed``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BlocklensError


@dataclass
class Factors:
    """``spatial`` (k, H, W) >= 0, ``channel`` (k, C) directions, ``channel_nonneg`` (k, C or 2C) as fitted,
    ``reconstruction_error`` (Frobenius norm of the residual, on the fitted matrix), ``signed``."""

    spatial: np.ndarray
    channel: np.ndarray
    channel_nonneg: np.ndarray
    reconstruction_error: float
    relative_error: float
    signed: bool

    def reconstruct(self) -> np.ndarray:
        """(C', H, W) reconstruction of the fitted (non-negative) matrix."""
        k, h, w = self.spatial.shape
        return np.einsum("khw,kc->chw", self.spatial, self.channel_nonneg)


def nonneg_matrix(acts: np.ndarray, signed: bool | None = None) -> tuple[np.ndarray, bool]:
    """(C, H, W) activations -> ((H*W, C or 2C) non-negative matrix, signed?). ``signed``: the treatment to apply
    (``[relu(A), relu(-A)]`` when True); None decides by the data (signed when any value is negative)."""
    c = acts.shape[0]
    flat = acts.reshape(c, -1).T.astype(np.float64)
    if signed is None:
        signed = bool(flat.min() < 0)
    if not signed:
        return flat, False
    return np.concatenate([np.maximum(flat, 0), np.maximum(-flat, 0)], axis=1), True


def nndsvd_init(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative double SVD initialization (Boutsidis & Gallopoulos 2008), zeros filled with the data mean
    ("NNDSVDa"): a deterministic start that NMF refines."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    w = np.zeros((x.shape[0], k))
    h = np.zeros((k, x.shape[1]))
    w[:, 0] = np.sqrt(s[0]) * np.abs(u[:, 0])
    h[0] = np.sqrt(s[0]) * np.abs(vt[0])
    for j in range(1, k):
        a, b = u[:, j], vt[j]
        ap, an, bp, bn = np.maximum(a, 0), np.maximum(-a, 0), np.maximum(b, 0), np.maximum(-b, 0)
        pos = np.linalg.norm(ap) * np.linalg.norm(bp)
        neg = np.linalg.norm(an) * np.linalg.norm(bn)
        if pos >= neg:
            uu, vv, sigma = ap / (np.linalg.norm(ap) or 1), bp / (np.linalg.norm(bp) or 1), pos
        else:
            uu, vv, sigma = an / (np.linalg.norm(an) or 1), bn / (np.linalg.norm(bn) or 1), neg
        w[:, j] = np.sqrt(s[j] * sigma) * uu
        h[j] = np.sqrt(s[j] * sigma) * vv
    mean = x.mean()
    w[w == 0] = mean / 100
    h[h == 0] = mean / 100
    return w, h


def _hals(x: np.ndarray, w: np.ndarray, h: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Hierarchical alternating least squares (coordinate descent on one factor row / column at a time)."""
    eps = 1e-12
    norm_x = np.linalg.norm(x)
    prev = None
    for _ in range(max_iter):
        wtx, wtw = w.T @ x, w.T @ w
        for j in range(h.shape[0]):
            h[j] = np.maximum(h[j] + (wtx[j] - wtw[j] @ h) / max(wtw[j, j], eps), 0)
        xht, hht = x @ h.T, h @ h.T
        for j in range(w.shape[1]):
            w[:, j] = np.maximum(w[:, j] + (xht[:, j] - w @ hht[:, j]) / max(hht[j, j], eps), 0)
        err = np.linalg.norm(x - w @ h) / norm_x
        if prev is not None and prev - err < tol * prev:
            break
        prev = err
    return w, h


def nmf_matrix(matrix: np.ndarray, k: int, max_iter: int = 400, tol: float = 1e-5) -> tuple[np.ndarray, np.ndarray, float]:
    """Factorize a non-negative ``(rows, columns)`` matrix into ``(rows, k) @ (k, columns)``: NNDSVDa start, then
    HALS. Returns both factors and the relative reconstruction error (Frobenius)."""
    x = np.asarray(matrix, dtype=np.float64)
    if not 1 <= k <= min(x.shape):
        raise BlocklensError(f"k={k} must be between 1 and min(rows, columns) = min{tuple(x.shape)}")
    if not x.any():
        raise BlocklensError("the matrix is all zeros; nothing to factorize")
    w, h = _hals(x, *nndsvd_init(x, k), max_iter=max_iter, tol=tol)
    return w, h, float(np.linalg.norm(x - w @ h) / np.linalg.norm(x))


def project(matrix: np.ndarray, components: np.ndarray, iters: int = 50) -> np.ndarray:
    """Non-negative loadings ``(rows, k)`` of ``matrix`` ``(rows, columns)`` on fixed ``components`` ``(k, columns)``
    (least squares, coordinate descent): where each component is present in new data."""
    x = np.asarray(matrix, dtype=np.float64)
    h = np.asarray(components, dtype=np.float64)
    hht, xht = h @ h.T, x @ h.T
    w = np.maximum(xht / np.maximum(np.diag(hht), 1e-12), 0) / max(h.shape[0], 1)
    for _ in range(iters):
        for j in range(h.shape[0]):
            w[:, j] = np.maximum(w[:, j] + (xht[:, j] - w @ hht[:, j]) / max(hht[j, j], 1e-12), 0)
    return w


def nmf(acts: np.ndarray, n_groups: int = 6, seed: int = 0, max_iter: int = 400, tol: float = 1e-5) -> Factors:
    """Factorize one image's activations ``(C, H, W)`` into ``n_groups`` groups (:func:`nmf_matrix` on the
    ``(H*W, C')`` matrix). Deterministic (``seed`` is kept for API stability); its reconstruction error matches
    scikit-learn's NMF on the same matrix (tests/test_groups.py) without its import cost."""
    if acts.ndim != 3:
        raise BlocklensError(f"NMF needs activations of shape (C, H, W), got {acts.shape}")
    c, h, w = acts.shape
    if not 1 <= n_groups <= min(c, h * w):
        raise BlocklensError(f"n_groups={n_groups} must be between 1 and min(channels, positions) = "
                             f"min({c}, {h * w}) for this layer")
    matrix, signed = nonneg_matrix(acts)
    if not matrix.any():
        raise BlocklensError("the activations are all zero at this layer for this image; nothing to factorize")
    spatial, comps = _hals(matrix, *nndsvd_init(matrix, n_groups), max_iter=max_iter, tol=tol)  # (HW, k), (k, C')
    err = float(np.linalg.norm(matrix - spatial @ comps))
    rel = err / float(np.linalg.norm(matrix))
    return Factors(spatial.T.reshape(n_groups, h, w).astype(np.float32), fold(comps, c).astype(np.float32),
                   comps.astype(np.float32), err, rel, signed)


def fold(components: np.ndarray, channels: int) -> np.ndarray:
    """``(k, C')`` non-negative components -> ``(k, C)`` signed directions (``positive - negative`` part when
    ``C' = 2C``)."""
    comps = np.asarray(components)
    return comps[:, :channels] - comps[:, channels:] if comps.shape[1] == 2 * channels else comps


def split_activations(acts: np.ndarray, spatial: np.ndarray, channel_nonneg: np.ndarray,
                      signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Split ``acts`` ``(C, H, W)`` exactly among ``k`` groups -> ``(parts (k, C, H, W), residual (C, H, W))``,
    float64, with ``parts.sum(0) + residual == acts``.

    Each element goes to group ``g`` in proportion to ``spatial[g, y, x] * channel_nonneg[g, c]``; for signed
    factorizations ``relu(acts)`` is split by the first ``C`` columns and ``relu(-acts)`` by the last ``C``.
    Elements that no group reconstructs (all reconstructions zero) go to the residual.
    """
    a = np.asarray(acts, dtype=np.float64)
    s = np.asarray(spatial, dtype=np.float64)
    w = np.asarray(channel_nonneg, dtype=np.float64)
    c = a.shape[0]
    if signed:
        if w.shape[1] != 2 * c:
            raise BlocklensError(f"signed factors need (k, 2C) = (k, {2 * c}) channel factors, got {w.shape}")
        pieces = [(np.maximum(a, 0), w[:, :c], 1.0), (np.maximum(-a, 0), w[:, c:], -1.0)]
    else:
        if w.shape[1] != c:
            raise BlocklensError(f"channel factors have {w.shape[1]} columns but the activations have {c} channels")
        pieces = [(a, w, 1.0)]
    parts = np.zeros((s.shape[0],) + a.shape)
    residual = np.zeros_like(a)
    for x, wp, sign in pieces:
        recon = np.einsum("khw,kc->kchw", s, wp)      # (k, C, H, W) each group's reconstruction
        total = recon.sum(axis=0)                     # (C, H, W)
        covered = total > 0
        frac = recon / np.where(covered, total, 1.0)
        parts += sign * frac * x
        residual += sign * np.where(covered, 0.0, x)
    return parts, residual
