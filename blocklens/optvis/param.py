"""Image parameterizations for feature visualization.

A parameterization is an ``nn.Module`` that owns the learnable tensor an optimizer updates, and maps it to
an image when called with no arguments::

    param = FourierImage(batch=2, size=128, seed=0)
    img = param()                  # (B, C, H, W) float32 in (0, 1); C = 3, or 4 with alpha=True
    opt = torch.optim.Adam(param.parameters(), lr=0.05)

Two parameterizations are provided, both following Lucid (Olah et al., 2017):

* :class:`FourierImage` stores the image as rfft2 coefficients, scaled so that every frequency starts with
  about the same energy per unit of gradient (a ``1 / |f| ** decay_power`` spectrum), which acts as a
  preconditioner and gives far less high-frequency noise than optimizing pixels directly.
* :class:`PixelImage` stores the pixels themselves.

Both end in :func:`to_valid_rgb`: an optional fixed linear map that decorrelates the colour channels
(parameter space is "decorrelated colour", the map takes it to RGB) followed by a sigmoid into (0, 1).
The alpha channel, when present, is not colour-mixed; it only goes through the sigmoid.

Move a parameterization to a device with ``.to(device)``; everything it needs is a parameter or a buffer.
Initialization is deterministic given ``seed`` (or an explicit ``torch.Generator``), and always drawn on
the CPU, so the same seed gives the same image on every device.
"""
from __future__ import annotations

import math

from collections.abc import Sequence

import torch
from torch import nn

from .basis import (COLOR_CORRELATION_NORMALIZED, COLOR_CORRELATION_SVD_SQRT, linear_decorrelate_color, rfft2_freqs,
                    spectrum_scale, to_valid_rgb)
from .spectrum import natural_spectrum

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "COLOR_CORRELATION_NORMALIZED",
    "linear_decorrelate_color",
    "to_valid_rgb",
    "rfft2_freqs",
    "spectrum_scale",
    "FourierImage",
    "PixelImage",
    "PhaseImage",
    "image",
]

def _as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """``128`` -> ``(128, 128)``; ``(h, w)`` -> ``(h, w)``; both positive."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {(h, w)}")
    return int(h), int(w)


def _make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    """The generator to draw the initial values from: ``generator``, a fresh one seeded with ``seed``,
    or ``None`` (torch's global RNG)."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None:
        return torch.Generator().manual_seed(seed)
    return generator


def _init_draw(shape: tuple[int, ...], draw, seed: int | None, generator: torch.Generator | None,
               seeds: Sequence[int] | None) -> torch.Tensor:
    """Initial values from ``draw`` (``torch.randn`` or ``torch.rand``); with ``seeds`` each batch element is drawn
    from its own seed, so an image's start does not depend on its position in the batch."""
    if seeds is None:
        return draw(shape, generator=_make_generator(seed, generator))
    if len(seeds) != shape[0]:
        raise ValueError(f"seeds has {len(seeds)} entries for a batch of {shape[0]}")
    return torch.stack([draw(shape[1:], generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _init_normal(shape: tuple[int, ...], sd: float, seed: int | None, generator: torch.Generator | None,
                 seeds: Sequence[int] | None) -> torch.Tensor:
    """N(0, sd) initial values (see :func:`_init_draw`)."""
    return _init_draw(shape, torch.randn, seed, generator, seeds) * sd


#: Standard deviations (pre-sigmoid, decorrelated colour: luma, then the two colour opponents) of the contrast
#: ramp's target: random-phase images with the bundled photographs' spectrum have RMS contrast 0.24 and
#: colourfulness 58 with them, against 0.19 and 46 for the photographs (at 56 px).
CONTRAST_GAINS = (2.2, 3.0, 3.0)


def standardize_colour(t: torch.Tensor, amount: float = 1.0, gains=CONTRAST_GAINS) -> torch.Tensor:
    """Blend each image's colour channels (``(B, 3, H, W)``, pre-sigmoid, decorrelated) toward zero mean and
    standard deviation ``gains``: ``amount`` 0 leaves them, 1 standardizes fully (the contrast ramp)."""
    flat = t.flatten(2)
    std = flat.std(2)[..., None, None] + 1e-8
    g = torch.tensor(gains, device=t.device, dtype=t.dtype).view(1, 3, 1, 1)
    return (t - flat.mean(2)[..., None, None]) * ((1 - amount) + amount * g / std)


class _ImageParam(nn.Module):
    """What every image parameterization shares: batch, size, channels (+ alpha), init scale, decorrelation."""

    def __init__(self, batch: int, size: int | tuple[int, int], channels: int, alpha: bool, sd: float,
                 decorrelate: bool):
        super().__init__()
        if decorrelate and channels != 3:
            raise ValueError(f"decorrelate=True needs channels=3, got {channels}")
        self.batch = batch
        self.size = _as_hw(size)
        self.channels = channels + int(alpha)
        self.alpha = alpha
        self.sd = sd
        self.decorrelate = decorrelate

    def extra_repr(self) -> str:
        h, w = self.size
        return (f"batch={self.batch}, size=({h}, {w}), channels={self.channels}, alpha={self.alpha}, "
                f"sd={self.sd}, decorrelate={self.decorrelate}")


class FourierImage(_ImageParam):
    """An image batch parameterized by its (scaled) 2-D real FFT coefficients.

    Parameter ``spectrum``: (B, C, H, W // 2 + 1, 2), the real and imaginary parts, initialized N(0, sd).
    ``forward()``: (B, C, H, W) in (0, 1), computed as::

        coeffs = complex(spectrum) * spectrum_scale(H, W, decay_power)   # (B, C, H, W//2+1)
        t = irfft2(coeffs, s=(H, W)) / 4                                 # (B, C, H, W)
        image = to_valid_rgb(t, decorrelate)

    Args:
        batch: number of images B.
        size: ``H`` for a square image, or ``(H, W)``; odd and non-square sizes are fine.
        channels: colour channels (3 for RGB); ``alpha=True`` adds one more, so C = channels + alpha.
        alpha: add an alpha channel (last), which is not colour-decorrelated.
        sd: standard deviation of the initial coefficients.
        decay_power: exponent of the ``1 / |f|`` spectrum scaling; 0 makes it flat.
        decorrelate: apply :func:`linear_decorrelate_color` before the sigmoid (needs channels == 3).
        seed: seed for the initialization; or pass ``generator`` instead (not both). With neither, torch's
            global RNG is used.
        generator: a CPU ``torch.Generator`` to draw the initialization from.
        seeds: one seed per image instead (``len(seeds) == batch``): each image's start is then independent
            of its batch mates and of its position in the batch.
    """

    def __init__(
        self,
        batch: int = 1,
        size: int | tuple[int, int] = 128,
        channels: int = 3,
        alpha: bool = False,
        sd: float = 0.01,
        decay_power: float = 1.0,
        decorrelate: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ):
        super().__init__(batch, size, channels, alpha, sd, decorrelate)
        self.decay_power = decay_power
        h, w = self.size
        shape = (batch, self.channels, h, w // 2 + 1, 2)
        self.spectrum = nn.Parameter(_init_normal(shape, sd, seed, generator, seeds))
        self.register_buffer("scale", spectrum_scale(h, w, decay_power), persistent=False)

    #: contrast normalization, set by the render loop: 0 = off; 1 = every colour channel standardized to ``gains``
    standardize: float = 0.0
    gains: tuple[float, ...] = CONTRAST_GAINS

    def forward(self) -> torch.Tensor:
        """Returns the image batch, (B, C, H, W) in (0, 1)."""
        coeffs = torch.complex(self.spectrum[..., 0], self.spectrum[..., 1]) * self.scale
        t = torch.fft.irfft2(coeffs, s=self.size) / 4
        if self.standardize > 0:
            t = torch.cat([standardize_colour(t[:, :3], float(self.standardize), self.gains), t[:, 3:]], 1)
        return to_valid_rgb(t, self.decorrelate)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, decay_power={self.decay_power}"

    def upsampled(self, size: int | tuple[int, int]) -> "FourierImage":
        """The same images at a larger ``size`` (coarse-to-fine optimization): the coefficients are carried over
        at their frequencies and the new, higher ones start at zero, so the new image is the old one upsampled
        (band-limited). Everything else (decay power, contrast, decorrelation) is kept."""
        H, W = _as_hw(size)
        h, w = self.size
        if H < h or W < w:
            raise ValueError(f"upsampled() needs a size at least {self.size}, got {(H, W)}")
        new = FourierImage(self.batch, (H, W), channels=self.channels - int(self.alpha), alpha=self.alpha,
                           sd=self.sd, decay_power=self.decay_power, decorrelate=self.decorrelate, seed=0)
        new.standardize, new.gains = self.standardize, self.gains
        with torch.no_grad():
            coeffs = torch.complex(self.spectrum[..., 0], self.spectrum[..., 1]) * self.scale
            big = torch.zeros(self.batch, self.channels, H, W // 2 + 1, dtype=coeffs.dtype, device=coeffs.device)
            pos, neg = (h + 1) // 2, h // 2  # rows 0..pos-1 are frequencies 0.., the last `neg` rows negative
            cols = w // 2 + 1
            gain = (H * W) / (h * w)  # irfft2 divides by the number of pixels
            big[:, :, :pos, :cols] = coeffs[:, :, :pos, :cols] * gain
            if neg:
                big[:, :, H - neg:, :cols] = coeffs[:, :, h - neg:, :cols] * gain
            spec = big / new.scale.to(big.device)
            new.spectrum.data = torch.stack([spec.real, spec.imag], -1).to(self.spectrum.dtype)
        return new.to(self.spectrum.device)


class PixelImage(_ImageParam):
    """An image batch parameterized directly by its (pre-sigmoid, decorrelated-colour) pixels.

    Parameter ``pixels``: (B, C, H, W), initialized N(0, sd).
    ``forward()``: ``to_valid_rgb(pixels, decorrelate)``, (B, C, H, W) in (0, 1).

    Arguments are as for :class:`FourierImage` (without ``decay_power``).
    """

    def __init__(
        self,
        batch: int = 1,
        size: int | tuple[int, int] = 128,
        channels: int = 3,
        alpha: bool = False,
        sd: float = 0.01,
        decorrelate: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ):
        super().__init__(batch, size, channels, alpha, sd, decorrelate)
        shape = (batch, self.channels, *self.size)
        self.pixels = nn.Parameter(_init_normal(shape, sd, seed, generator, seeds))

    def forward(self) -> torch.Tensor:
        """Returns the image batch, (B, C, H, W) in (0, 1)."""
        return to_valid_rgb(self.pixels, self.decorrelate)


class PhaseImage(_ImageParam):
    """Phase-only images (after MACO, Fel et al. 2023): fixed natural Fourier magnitudes, learnable phases.

    Parameter ``phase``: (B, C, H, W // 2 + 1) radians, initialized uniform in [-pi, pi). The magnitudes are
    :func:`~blocklens.optvis.spectrum.natural_spectrum` (computed from the bundled photographs; the DC term is
    zero, so the mean colour is grey). ``forward()``::

        t = irfft2(magnitude * exp(i * phase), s=(H, W))
        t = gain * (t - mean(t)) / std(t)        # per image, over channels and pixels
        image = to_valid_rgb(t, decorrelate)

    Because only phases move, every image has a photograph's contrast, colour spread and ``1/f`` falloff
    from the first step, whatever the objective; ``gain`` sets that contrast (the standard deviation in the
    decorrelated, pre-sigmoid space). No alpha channel: transparency needs a magnitude of its own.
    """

    def __init__(
        self,
        batch: int = 1,
        size: int | tuple[int, int] = 128,
        channels: int = 3,
        alpha: bool = False,
        sd: float = 0.0,
        decorrelate: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
        gain: float | tuple[float, float, float] = CONTRAST_GAINS,
    ):
        if alpha or channels != 3:
            raise ValueError("PhaseImage makes RGB images only (no alpha, 3 channels); use FourierImage for alpha")
        super().__init__(batch, size, channels, alpha, sd, decorrelate)
        h, w = self.size
        self.gain = tuple(float(g) for g in (gain if isinstance(gain, (tuple, list)) else (gain,) * 3))
        self.register_buffer("gains", torch.tensor(self.gain).view(1, 3, 1, 1), persistent=False)
        mag = natural_spectrum((h, w))
        mag[:, 0, 0] = 0.0
        self.register_buffer("magnitude", mag, persistent=False)
        u = _init_draw((batch, 3, h, w // 2 + 1), torch.rand, seed, generator, seeds)
        self.phase = nn.Parameter((u * 2 - 1) * math.pi)

    def forward(self) -> torch.Tensor:
        """Returns the image batch, (B, 3, H, W) in (0, 1)."""
        coeffs = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        t = torch.fft.irfft2(coeffs, s=self.size)
        flat = t.flatten(2)
        t = (t - flat.mean(2)[..., None, None]) / (flat.std(2)[..., None, None] + 1e-8) * self.gains
        return to_valid_rgb(t, self.decorrelate)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gain={self.gain}"


def image(
    size: int | tuple[int, int],
    batch: int = 1,
    fft: bool = True,
    decorrelate: bool = True,
    alpha: bool = False,
    sd: float = 0.01,
    seed: int | None = None,
) -> FourierImage | PixelImage:
    """Convenience constructor: a :class:`FourierImage` (``fft=True``) or a :class:`PixelImage`."""
    cls = FourierImage if fft else PixelImage
    return cls(batch=batch, size=size, alpha=alpha, sd=sd, decorrelate=decorrelate, seed=seed)
