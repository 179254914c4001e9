"""Colours for groups: evenly spaced hues in a perceptual colour space, and maps that blend them.

A neuron-group view gives each of ``k`` groups its own colour and paints every position of the layer's grid
with the colours of the groups that fire there. Hues are spaced evenly in OKLCH (the polar form of OKLab, a
perceptually uniform space published by Björn Ottosson in 2020), all at the same lightness and chroma, so no
group looks louder than another merely because its hue is brighter: ``group_colors(k)[i]`` has hue
``start + 360 / k * i`` degrees.

The conversion OKLCH -> OKLab -> linear sRGB -> sRGB is implemented here from the published formulas.
Colours outside the sRGB gamut keep their lightness and hue and lose chroma until they fit (bisection on
chroma), which is a better clip than cutting each RGB channel, as it does not shift the hue.

This module is generic: plain NumPy, no model, no torch.
"""
from __future__ import annotations

import numpy as np

# OKLab -> non-linear LMS (the cube roots of the cone responses), then LMS -> linear sRGB (Ottosson, 2020).
_LAB_TO_LMS = np.array([[1.0, 0.3963377774, 0.2158037573],
                        [1.0, -0.1055613458, -0.0638541728],
                        [1.0, -0.0894841775, -1.2914855480]])
_LMS_TO_LINEAR_SRGB = np.array([[4.0767416621, -3.3077115913, 0.2309699292],
                                [-1.2684380046, 2.6097574011, -0.3413193965],
                                [-0.0041960863, -0.7034186147, 1.7076147010]])

#: the colour of cells where no group fires (a light grey, so white page backgrounds still frame the grid)
BACKGROUND = (238, 238, 238)


def oklab_to_linear_srgb(lab: np.ndarray) -> np.ndarray:
    """``(..., 3)`` OKLab ``(L, a, b)`` -> ``(..., 3)`` linear-light sRGB (not clipped; out of [0, 1] when out
    of gamut)."""
    lab = np.asarray(lab, dtype=np.float64)
    lms = (lab @ _LAB_TO_LMS.T) ** 3
    return lms @ _LMS_TO_LINEAR_SRGB.T


def linear_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """Linear-light values in [0, 1] -> sRGB-encoded values in [0, 1] (the sRGB transfer curve)."""
    rgb = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    return np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)


def oklch_to_oklab(lightness: float, chroma: float, hue_deg: float) -> np.ndarray:
    """OKLCH (hue in degrees) -> ``(3,)`` OKLab."""
    h = np.deg2rad(hue_deg)
    return np.array([lightness, chroma * np.cos(h), chroma * np.sin(h)])


def _in_gamut(lin: np.ndarray, tol: float = 1e-9) -> bool:
    return bool(np.all(lin >= -tol) and np.all(lin <= 1 + tol))


def oklch_to_srgb8(lightness: float, chroma: float, hue_deg: float) -> np.ndarray:
    """One OKLCH colour -> ``(3,)`` uint8 sRGB; out-of-gamut colours are brought in by reducing chroma."""
    lin = oklab_to_linear_srgb(oklch_to_oklab(lightness, chroma, hue_deg))
    if not _in_gamut(lin):
        lo, hi = 0.0, float(chroma)  # chroma 0 (a grey) is in gamut for lightness in [0, 1]
        for _ in range(40):
            mid = (lo + hi) / 2
            if _in_gamut(oklab_to_linear_srgb(oklch_to_oklab(lightness, mid, hue_deg))):
                lo = mid
            else:
                hi = mid
        lin = oklab_to_linear_srgb(oklch_to_oklab(lightness, lo, hue_deg))
    return np.round(linear_to_srgb(lin) * 255).astype(np.uint8)


def group_colors(k: int, *, lightness: float = 0.7, chroma: float = 0.15, start: float = 0.0) -> np.ndarray:
    """``k`` colours, ``(k, 3)`` uint8 sRGB: hue ``start + 360 / k * i`` in OKLCH at fixed lightness and chroma.

    >>> group_colors(3).shape
    (3, 3)
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"group_colors needs k >= 1, got {k}")
    if not 0.0 <= lightness <= 1.0 or chroma < 0:
        raise ValueError(f"lightness must be in [0, 1] and chroma >= 0; got {lightness}, {chroma}")
    return np.stack([oklch_to_srgb8(lightness, chroma, (start + 360.0 / k * i) % 360.0) for i in range(k)])


def blend(spatial: np.ndarray, colors: np.ndarray, *, eps: float = 1e-3,
          background: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """Paint a grid with group colours: ``spatial`` ``(k, H, W)`` >= 0, ``colors`` ``(k, 3)`` -> ``(H, W, 3)`` uint8.

    Each group's map is first divided by its own maximum (so a weak group still shows where it is strongest);
    a cell's colour is then the average of the group colours weighted by the squared normalized values
    (squaring lets the dominant group win the cell while mixtures stay visible). Cells where every normalized
    value is below ``eps`` -- no group fires -- get ``background``.
    """
    spatial = np.asarray(spatial, dtype=np.float64)
    colors = np.asarray(colors, dtype=np.float64)
    if spatial.ndim != 3:
        raise ValueError(f"blend expects spatial factors of shape (k, H, W), got {spatial.shape}")
    if colors.shape != (spatial.shape[0], 3):
        raise ValueError(f"blend expects colors of shape ({spatial.shape[0]}, 3) for {spatial.shape[0]} groups, "
                         f"got {colors.shape}")
    peak = spatial.reshape(spatial.shape[0], -1).max(axis=1)
    scale = np.where(peak > 0, peak, 1.0)[:, None, None]
    norm = np.where(peak[:, None, None] > 0, np.clip(spatial, 0, None) / scale, 0.0)   # (k, H, W) in [0, 1]
    weights = norm ** 2                                   # (k, H, W)
    total = weights.sum(axis=0)                           # (H, W)
    mixed = np.einsum("khw,kc->hwc", weights, colors) / np.where(total > 0, total, 1.0)[..., None]
    empty = norm.max(axis=0) < eps if norm.size else np.ones(spatial.shape[1:], bool)
    mixed[empty] = np.asarray(background, dtype=np.float64)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)
