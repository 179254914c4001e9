"""The image basis every parameterization shares: colour decorrelation and the rfft2 frequencies with their 1/f scale."""
from __future__ import annotations

import math

import torch

# Square root of the colour correlation matrix of ImageNet images (from its SVD), as in Lucid.
COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
)
# The same matrix divided by its largest column L2 norm, so that the largest column has norm 1.
COLOR_CORRELATION_NORMALIZED = (
    COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
).to(torch.float32)


def linear_decorrelate_color(t: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour to RGB: ``t @ M.T`` over the channel dim, ``M = COLOR_CORRELATION_NORMALIZED``.

    ``t``: (..., C, H, W) with C = 3, or C = 4 where channel 3 is alpha and passes through unchanged.
    Returns a tensor of the same shape.
    """
    c = t.shape[-3]
    if c not in (3, 4):
        raise ValueError(f"colour decorrelation needs 3 channels (4 with alpha), got {c}")
    m = COLOR_CORRELATION_NORMALIZED.to(device=t.device, dtype=t.dtype)
    rgb = torch.einsum("...chw,dc->...dhw", t[..., :3, :, :], m)
    return torch.cat([rgb, t[..., 3:, :, :]], dim=-3) if c == 4 else rgb


def to_valid_rgb(t: torch.Tensor, decorrelate: bool = True) -> torch.Tensor:
    """Unconstrained parameter-space image -> image in (0, 1): optional colour decorrelation, then sigmoid.

    ``t``: (..., C, H, W); with ``decorrelate`` C must be 3, or 4 (RGB + alpha; alpha is not mixed).
    Returns a tensor of the same shape.
    """
    if decorrelate:
        t = linear_decorrelate_color(t)
    return torch.sigmoid(t)


def rfft2_freqs(h: int, w: int) -> torch.Tensor:
    """Frequency magnitude ``sqrt(fy**2 + fx**2)`` of each rfft2 coefficient of an (h, w) image.

    ``fy = fftfreq(h)`` along rows, ``fx = rfftfreq(w)`` along columns (cycles per pixel).
    Returns (h, w // 2 + 1) float64.
    """
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fy * fy + fx * fx)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> torch.Tensor:
    """Per-frequency scale of :class:`FourierImage`: ``sqrt(h*w) / max(|f|, 1/max(h, w)) ** decay_power``.

    The floor ``1 / max(h, w)`` (the lowest non-zero frequency) keeps the DC term finite.
    Returns (h, w // 2 + 1) float32.
    """
    freqs = rfft2_freqs(h, w).clamp(min=1.0 / max(h, w))
    return (freqs.pow(-decay_power) * math.sqrt(h * w)).to(torch.float32)
