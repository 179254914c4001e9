"""Reading images safely: every file is treated as hostile until Pillow has decoded it within our limits.

:func:`load_image` accepts a path, bytes, a file object or a PIL image and returns an RGB ``PIL.Image``:
- a missing file, a directory, a file that is not an image, or a truncated one raises :class:`ImageError`
  with the path and the reason;
- images larger than ``max_pixels`` are refused from their header, before any pixel is decoded
  (a decompression bomb never reaches memory);
- EXIF orientation is applied; grayscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and float
  images are converted to 8-bit RGB.
"""
from __future__ import annotations

import base64
import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageLike = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]

#: Refuse images with more pixels than this (width x height); about 8000 x 6000.
MAX_PIXELS = 50_000_000
#: Refuse files larger than this many bytes before opening them.
MAX_BYTES = 64 * 1024 * 1024

BUNDLED_DIR = Path(__file__).parent / "data" / "images"


def bundled_images() -> dict[str, Path]:
    """The photographs shipped with blocklens (provenance in ``data/images/SOURCES.md``), by file stem."""
    return {p.stem: p for p in sorted(BUNDLED_DIR.iterdir()) if p.suffix.lower() in {".png", ".jpg", ".jpeg"}}


def bundled_image(name: str) -> Path:
    """Path of a bundled photograph by stem (``"chelsea"``) or file name (``"chelsea.png"``)."""
    from .errors import unknown

    images = bundled_images()
    stem = Path(name).stem
    if stem not in images:
        raise unknown("bundled image", name, images)
    return images[stem]


def load_image(source: ImageLike, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> Image.Image:
    """Open ``source`` as an 8-bit RGB image, or raise :class:`ImageError` saying why not."""
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels, "image")
        return _to_rgb(source)
    label = _label(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{label}: no such file")
        if path.is_dir():
            raise ImageError(f"{label}: is a directory, not an image file")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{label}: file is {size:,} bytes; the limit is {max_bytes:,}")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError(f"{label}: more than {max_bytes:,} bytes")
    if not data:
        raise ImageError(f"{label}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_size(img.size, max_pixels, label)
            img.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image Pillow can read (PNG, JPEG, WebP, BMP, GIF, TIFF, ...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{label}: refused as a possible decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{label}: cannot decode the image ({e}); is the file truncated or corrupt?") from None
    return _to_rgb(img)


def _label(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "<uploaded image>"


def _check_size(size: tuple[int, int], max_pixels: int, label: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"{label}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"{label}: image is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,}")


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def png_data_uri(img, fmt: str = "PNG", **save) -> str:
    """A PIL image as a ``data:`` URI (PNG, or JPEG/WEBP where asked)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
