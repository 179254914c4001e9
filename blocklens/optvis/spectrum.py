"""The magnitude spectrum of natural images, computed from the photographs blocklens ships.

The phase-only parameterization (:class:`~blocklens.optvis.param.PhaseImage`, after MACO: Fel et al., NeurIPS
2023) keeps an image's Fourier magnitudes fixed at those of natural photographs and optimizes only the phases,
so every image it makes has the contrast, colour spread and ``1/f`` falloff of a photograph from the first
step. This module computes that spectrum; nothing is downloaded and no other project's spectrum file is used.

How (:func:`natural_spectrum`): every bundled photograph (``blocklens/data/images``, provenance in its
SOURCES.md) is cut into square crops at three scales (the whole centre square, and a 3 x 3 grid of crops at
3/4 and at 1/2 of its side), each crop and its mirror image resized to the requested size (bicubic), mapped
to the parameterization's space (the inverse sigmoid of the pixels, then the inverse of the colour
correlation matrix, so channel 0 is roughly luminance and 1, 2 colour opponents), and the magnitudes of its
2-D real FFT (per channel, the mean removed) are averaged over all crops. Averaging over 114 crops smooths
the spectrum without losing the stronger horizontal and vertical energy that photographs have. The result is
cached per size. Run ``python -m blocklens.optvis.spectrum 56`` to print its radial profile and slope.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from ..images import bundled_images, load_image
from .basis import COLOR_CORRELATION_NORMALIZED, rfft2_freqs

SCALES = (1.0, 0.75, 0.5)  # crop sides, as fractions of the photograph's shorter side


def _crops(img: Image.Image) -> list[Image.Image]:
    s0 = min(img.size)
    out = []
    for frac in SCALES:
        s = int(round(s0 * frac))
        if frac == 1.0:
            positions = [((img.width - s) // 2, (img.height - s) // 2)]
        else:
            xs = np.linspace(0, img.width - s, 3).round().astype(int)
            ys = np.linspace(0, img.height - s, 3).round().astype(int)
            positions = [(int(x), int(y)) for y in ys for x in xs]
        out += [img.crop((x, y, x + s, y + s)) for x, y in positions]
    return out


@lru_cache(maxsize=16)
def _spectrum(h: int, w: int) -> torch.Tensor:
    inv = torch.linalg.inv(COLOR_CORRELATION_NORMALIZED.double())
    total = torch.zeros(3, h, w // 2 + 1, dtype=torch.float64)
    count = 0
    for path in bundled_images().values():
        for crop in _crops(load_image(path)):
            for im in (crop, crop.transpose(Image.FLIP_LEFT_RIGHT)):
                a = np.asarray(im.resize((w, h), Image.BICUBIC), dtype=np.float64) / 255.0
                a = np.clip(a, 1 / 255, 254 / 255)
                logit = torch.from_numpy(np.log(a / (1 - a))).permute(2, 0, 1)      # (3, h, w) RGB logits
                t = torch.einsum("chw,dc->dhw", logit, inv)                         # decorrelated colour
                t = t - t.mean(dim=(1, 2), keepdim=True)
                total += torch.fft.rfft2(t).abs()
                count += 1
    mag = (total / count).float()
    mag[:, 0, 0] = 0.0  # the mean was removed; what is left there is rounding
    return mag


def natural_spectrum(size: int | tuple[int, int]) -> torch.Tensor:
    """(3, H, W // 2 + 1) float32: mean rfft2 magnitudes of the bundled photographs at ``size`` in the
    parameterization's colour space (see the module docstring); the DC term is zero."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return _spectrum(int(h), int(w)).clone()


def radial_profile(mag: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in cycles per pixel, mean magnitude of channel 0) for a (3, H, W//2+1) spectrum."""
    h = mag.shape[-2]
    w = (mag.shape[-1] - 1) * 2
    f = rfft2_freqs(h, w).numpy()
    step = 1.0 / max(h, w)
    bins = np.round(f / step).astype(int)
    n = int(0.5 / step)
    m = mag[0].double().numpy()
    sums = np.bincount(bins.ravel(), m.ravel(), minlength=n + 1)[1:n + 1]
    counts = np.bincount(bins.ravel(), minlength=n + 1)[1:n + 1]
    return np.arange(1, n + 1) * step, sums / np.maximum(counts, 1)


if __name__ == "__main__":
    import sys

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 56
    mag = natural_spectrum(size)
    f, p = radial_profile(mag)
    slope = np.polyfit(np.log(f[1:]), np.log(p[1:] ** 2), 1)[0]
    print(f"natural spectrum at {size} px: power slope {slope:.2f} (photographs: about -2)")
    print("channel rms (luma, two opponents):", [f"{float(c.pow(2).mean().sqrt()):.2f}" for c in mag])
    for fi, pi in list(zip(f, p))[:: max(1, len(f) // 12)]:
        print(f"  f={fi:.3f}  |F|={pi:.2f}")
