"""Transformation robustness: random, differentiable image transforms applied before the model.

Feature visualization optimizes an image through a stack of small random transforms (pad, jitter, scale,
rotate) so that the result is a feature of the image, not of one exact pixel grid. All transforms here are
``nn.Module``s acting on float tensors of shape (B, C, H, W), and are differentiable w.r.t. the input.

Randomness. Every random transform takes the generator at *call* time::

    g = torch.Generator().manual_seed(0)
    out = standard_transforms()(img, generator=g)

``generator`` is a ``torch.Generator`` (CPU, or on the device the random draws should be made on); with
``None`` torch's global RNG is used. :class:`Compose` forwards it to each of its transforms, so one seeded
generator makes a whole render repeatable. The random parameters are drawn afresh on every call, and one
draw applies to the whole batch (every image of the batch gets the same offset / scale / angle), as in Lucid.

Fixed parameters. Each random transform is its ``sample`` method (draw the parameters) followed by a plain
function of this module that applies given parameters: :func:`pad`, :func:`jitter`, :func:`scale`,
:func:`rotate`. Call those directly to apply a transform deterministically (e.g. in tests).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "pad",
    "jitter",
    "scale",
    "rotate",
    "Transform",
    "Pad",
    "Jitter",
    "RandomScale",
    "RandomRotate",
    "Compose",
    "standard_transforms",
    "scaled_transforms",
    "DEFAULT_SCALES",
    "DEFAULT_ANGLES",
]

# Lucid's standard_transforms choices: scales 0.90, 0.92, ..., 1.10; integer angles -10..10 (degrees).
DEFAULT_SCALES: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))
DEFAULT_ANGLES: tuple[float, ...] = tuple(range(-10, 11))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in [0, high), drawn from ``generator`` (or the global RNG)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(high, (1,), generator=generator, device=device).item())


# --- functional forms: apply with fixed parameters ---------------------------------------------------------


def pad(x: torch.Tensor, width: int, value: float = 0.5, mode: str = "constant") -> torch.Tensor:
    """Pad ``width`` pixels on all four sides: (B, C, H, W) -> (B, C, H + 2w, W + 2w).

    ``mode`` is as for ``F.pad`` (``"constant"`` fills with ``value``; ``"reflect"``, ``"replicate"``).
    """
    if mode == "constant":
        return F.pad(x, (width,) * 4, mode="constant", value=value)
    return F.pad(x, (width,) * 4, mode=mode)


def jitter(x: torch.Tensor, d: int, ox: int, oy: int) -> torch.Tensor:
    """Crop of size (H - d, W - d) starting at column ``ox``, row ``oy``: ``x[..., oy:oy+H-d, ox:ox+W-d]``.

    (B, C, H, W) -> (B, C, H - d, W - d); ``0 <= ox, oy <= d``.
    """
    h, w = x.shape[-2:]
    if not (0 <= ox <= d and 0 <= oy <= d):
        raise ValueError(f"jitter offsets must lie in [0, {d}], got ox={ox}, oy={oy}")
    return x[..., oy : oy + h - d, ox : ox + w - d]


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by ``factor``: (B, C, H, W) -> (B, C, round(H * factor), round(W * factor)).

    Uses ``F.interpolate(mode="bilinear", align_corners=False)`` (pixel-centre convention, no antialiasing).
    """
    h, w = x.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def rotate(x: torch.Tensor, degrees: float, padding_mode: str = "zeros") -> torch.Tensor:
    """Rotate by ``degrees`` about the image centre, bilinear sampling; (B, C, H, W) -> same shape.

    Positive angles turn the image counter-clockwise as displayed (row 0 at the top), so ``degrees=90`` on a
    square image equals ``np.rot90(x, k=1, axes=(-2, -1))`` (up to float rounding). Pixels sampled from
    outside the input are filled per ``padding_mode`` of ``F.grid_sample``: ``"zeros"`` (default, as Lucid's
    ``tf.contrib.image.rotate``), ``"border"`` or ``"reflection"``. Rotation is done in pixel units, so a
    non-square image is rotated without shear.
    """
    h, w = x.shape[-2:]
    rad = math.radians(degrees)
    c, s = math.cos(rad), math.sin(rad)
    # affine_grid maps each output location to the input location it samples, in normalized coordinates
    # (x over the width, y over the height, both in [-1, 1]). In pixels relative to the centre, a
    # counter-clockwise turn (y pointing down) samples input (c*x - s*y, s*x + c*y); the h/w factors convert
    # between the two axes' normalized units.
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


# --- modules -----------------------------------------------------------------------------------------------


class Transform(nn.Module):
    """Base class: ``forward(x, generator=None)``, x (B, C, H, W); random subclasses draw in ``sample``."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError


class Pad(Transform):
    """Pad ``width`` pixels on every side (deterministic; ``generator`` is accepted and ignored).

    (B, C, H, W) -> (B, C, H + 2 * width, W + 2 * width). See :func:`pad`.
    """

    def __init__(self, width: int = 12, value: float = 0.5, mode: str = "constant"):
        super().__init__()
        self.width, self.value, self.mode = width, value, mode

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return pad(x, self.width, self.value, self.mode)

    def extra_repr(self) -> str:
        return f"width={self.width}, value={self.value}, mode={self.mode!r}"


class Jitter(Transform):
    """Random crop of size (H - d, W - d), like Lucid's ``jitter(d)``.

    (B, C, H, W) -> (B, C, H - d, W - d). The offsets ``ox, oy`` are independent and uniform over the
    ``d + 1`` integers ``0..d`` -- every crop position that fits, as ``tf.random_crop`` draws them.
    See :func:`jitter`.
    """

    def __init__(self, d: int):
        super().__init__()
        if d < 0:
            raise ValueError(f"jitter distance must be >= 0, got {d}")
        self.d = d

    def sample(self, generator: torch.Generator | None = None) -> tuple[int, int]:
        """Draw ``(ox, oy)``."""
        return _randint(self.d + 1, generator), _randint(self.d + 1, generator)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ox, oy = self.sample(generator)
        return jitter(x, self.d, ox, oy)

    def extra_repr(self) -> str:
        return f"d={self.d}"


class RandomScale(Transform):
    """Bilinear resize by a factor drawn uniformly from ``scales`` (default 0.90, 0.92, ..., 1.10).

    (B, C, H, W) -> (B, C, round(H * s), round(W * s)). See :func:`scale`.
    """

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES):
        super().__init__()
        if len(scales) == 0:
            raise ValueError("scales must not be empty")
        self.scales = tuple(float(s) for s in scales)

    def sample(self, generator: torch.Generator | None = None) -> float:
        """Draw a scale factor."""
        return self.scales[_randint(len(self.scales), generator)]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return scale(x, self.sample(generator))

    def extra_repr(self) -> str:
        return f"scales={list(self.scales)}"


class RandomRotate(Transform):
    """Rotate about the centre by an angle (degrees) drawn uniformly from ``angles`` (default -10..10).

    (B, C, H, W) -> same shape. Positive angles are counter-clockwise as displayed; corners that come from
    outside the input are filled per ``padding_mode`` (default ``"zeros"``). See :func:`rotate`.
    """

    def __init__(self, angles: Sequence[float] = DEFAULT_ANGLES, padding_mode: str = "zeros"):
        super().__init__()
        if len(angles) == 0:
            raise ValueError("angles must not be empty")
        self.angles = tuple(float(a) for a in angles)
        self.padding_mode = padding_mode

    def sample(self, generator: torch.Generator | None = None) -> float:
        """Draw an angle in degrees."""
        return self.angles[_randint(len(self.angles), generator)]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return rotate(x, self.sample(generator), self.padding_mode)

    def extra_repr(self) -> str:
        angles = f"[{self.angles[0]:g} .. {self.angles[-1]:g}] ({len(self.angles)} values)"
        return f"angles={angles}, padding_mode={self.padding_mode!r}"


class Compose(Transform):
    """Apply transforms in order, passing ``generator`` to each :class:`Transform`.

    Members that are plain ``nn.Module``s (not :class:`Transform`) are called as ``t(x)``.
    """

    def __init__(self, transforms: Sequence[nn.Module]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator=generator) if isinstance(t, Transform) else t(x)
        return x

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> nn.Module:
        return self.transforms[i]


def standard_transforms() -> Compose:
    """Lucid's ``standard_transforms``: pad 12 (value 0.5), jitter 8, random scale, random rotate, jitter 4.

    An H x W input comes out (round((H + 16) * s) - 4) x (round((W + 16) * s) - 4), s in 0.90..1.10.
    """
    return Compose([Pad(12, value=0.5), Jitter(8), RandomScale(), RandomRotate(), Jitter(4)])


def scaled_transforms(size: int) -> Compose:
    """:func:`standard_transforms` with the pad and jitters scaled to an image of ``size`` pixels as Lucid's are to
    128 (at 56 px: pad 5, jitter 4, jitter 2): the same robustness relative to the picture, on fewer pixels."""
    f = size / 128
    return Compose([Pad(max(1, round(12 * f)), value=0.5), Jitter(max(2, round(8 * f))), RandomScale(),
                    RandomRotate(), Jitter(max(1, round(4 * f)))])
