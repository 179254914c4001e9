"""Matrix factorization of activations: a thin wrapper that flattens to (positions, channels), fits, reshapes.

NMF needs non-negative data. Post-ReLU layers are; a signed layer (a linear bottleneck such as EfficientNet's
block outputs) is factorized as ``[relu(A), relu(-A)]`` (its positive and negative parts as separate
channels, ``2C`` columns), and each group's channel factor is folded back into one signed direction
``positive part - negative part``. That treatment is reported in ``Factors.signed``.
"""
from __future__ import annotations

import warnings
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


def nonneg_matrix(acts: np.ndarray) -> tuple[np.ndarray, bool]:
    """(C, H, W) activations -> ((H*W, C or 2C) non-negative matrix, signed?)."""
    c = acts.shape[0]
    flat = acts.reshape(c, -1).T.astype(np.float64)
    if flat.min() >= 0:
        return flat, False
    return np.concatenate([np.maximum(flat, 0), np.maximum(-flat, 0)], axis=1), True


def nmf(acts: np.ndarray, n_groups: int = 6, seed: int = 0, max_iter: int = 500) -> Factors:
    """Factorize one image's activations ``(C, H, W)`` into ``n_groups`` groups (scikit-learn's NMF,
    NNDSVDa initialization, coordinate descent)."""
    from sklearn.decomposition import NMF

    if acts.ndim != 3:
        raise BlocklensError(f"NMF needs activations of shape (C, H, W), got {acts.shape}")
    c, h, w = acts.shape
    if not 1 <= n_groups <= min(c, h * w):
        raise BlocklensError(f"n_groups={n_groups} must be between 1 and min(channels, positions) = "
                             f"min({c}, {h * w}) for this layer")
    matrix, signed = nonneg_matrix(acts)
    if not matrix.any():
        raise BlocklensError("the activations are all zero at this layer for this image; nothing to factorize")
    model = NMF(n_components=n_groups, init="nndsvda", random_state=seed, max_iter=max_iter, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: we report the error instead
        spatial = model.fit_transform(matrix)  # (HW, k)
    comps = model.components_  # (k, C')
    err = float(np.linalg.norm(matrix - spatial @ comps))
    rel = err / float(np.linalg.norm(matrix))
    channel = comps[:, :c] - comps[:, c:] if signed else comps
    return Factors(spatial.T.reshape(n_groups, h, w).astype(np.float32), channel.astype(np.float32),
                   comps.astype(np.float32), err, rel, signed)
