"""Reading images safely: every file is treated as hostile until Pillow has decoded it within our limits.

:func:`load_image` accepts a path, bytes, a file object or a PIL image and returns an RGB ``PIL.Image``:
- a missing file, a directory, a file that is not an image, or a truncated one raises :class:`ImageError`
  with the path and the reason;
- images larger than ``max_pixels`` are refused from their header, before any pixel is decoded
  (a decompression bomb never reaches memory);
- EXIF orientation is applied; grayscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and float
  images are converted to 8-bit RGB.

:func:`picture_data_uri` writes a picture into a self-contained document (the report, the concepts and atlas
pages, JSON with pictures inline) as a ``data:`` URI, in the encoding chosen for its kind
(:data:`PICTURE_ENCODINGS`: icons and grids JPEG with full colour resolution, photographs WebP, PNG where pixels
must be exact); :func:`png_data_uri` writes exactly the format asked.
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
    """A PIL image as a ``data:`` URI in exactly the format asked (PNG unless ``fmt`` says otherwise). Documents
    inline pictures with :func:`picture_data_uri`; this is for where the format itself is required."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


#: How self-contained documents (the report, the concepts and atlas pages, notebook frames, JSON with pictures
#: inline) encode each kind of picture: ``kind -> (Pillow format, save options)``. Chosen by measurement
#: (bench/bench_report_size.py: bytes against the difference from the exact picture at the size the page shows it):
#: - ``icon``: feature visualizations (128 px, shown at 44-64 px). JPEG with full-resolution colour (4:4:4,
#:   ``subsampling=0``): these pictures are saturated colour down to single pixels, and halving the colour
#:   resolution (WebP, which Pillow writes 4:2:0 only, or JPEG's default 4:2:0) costs 4-6 dB at the size shown for
#:   the same bytes. Quality 75: 8.9 KB a reference icon instead of 43 KB of PNG, 38 dB PSNR at 56 px (the worst
#:   icon 36 dB), a mean colour difference (CIE76) of 2.7; no difference to the eye at 56 or 112 px
#:   (docs/icons_encoding.png). Quality 80 (39.6 dB) would leave the dog's report at 3.95 MB, too near its 4 MB
#:   budget once a GPU's default-preset direction icons (busier than the quick preset's) are in it.
#: - ``grid``: activation grids (mosaics of cell icons, shown at 300 px and zoomed up to 4x): as icons; smaller
#:   than the JPEG quality 90 (4:2:0) used before and closer to the exact picture at 300 px (35 dB against 32).
#: - ``photo``: photographs, their crops and dataset patches: WebP quality 90, at least as faithful at the size
#:   shown as the JPEG quality 85-92 used before; 17% fewer bytes than quality 92 on 224 px crops, 30-40% fewer
#:   than quality 88-92 on 56 px patches.
#: - ``exact``: PNG, for pictures whose pixels are read back. Any picture with transparency is written as PNG
#:   too, and a small one (at most :data:`SMALL_PIXELS`) as PNG wherever that is no larger than the lossy file.
PICTURE_ENCODINGS: dict[str, tuple[str, dict]] = {
    "icon": ("JPEG", {"quality": 75, "subsampling": 0}),
    "grid": ("JPEG", {"quality": 75, "subsampling": 0}),
    "photo": ("WEBP", {"quality": 90, "method": 6}),
    "exact": ("PNG", {}),
}
#: Pictures of at most this many pixels are encoded both ways and the smaller kept (PNG on a tie).
SMALL_PIXELS = 48 * 48

_MIME = {"JPEG": "image/jpeg", "WEBP": "image/webp", "PNG": "image/png"}


def _encode(img: Image.Image, fmt: str, options: dict) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        try:  # optimized Huffman tables, progressive: the same pixels in about 10% fewer bytes
            img.save(buf, "JPEG", optimize=True, progressive=True, **options)
            return buf.getvalue()
        except OSError:  # Pillow buffers such a file in w x h bytes; a very busy picture can need more
            buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def picture_bytes(img, kind: str = "icon") -> tuple[str, bytes]:
    """``(MIME type, bytes)`` of a picture (a PIL image, or an ``(H, W[, C])`` uint8 array) encoded for a
    self-contained document as ``kind`` says (see :data:`PICTURE_ENCODINGS`): ``icon``, ``grid``, ``photo`` or
    ``exact``."""
    if kind not in PICTURE_ENCODINGS:
        raise ValueError(f"picture kind {kind!r}: one of {', '.join(PICTURE_ENCODINGS)}")
    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.ascontiguousarray(img))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = img.getchannel("A")
        if alpha.getextrema()[0] < 255:
            kind = "exact"  # transparency: neither JPEG nor lossy WebP keeps it exactly
        else:
            img = img.convert("RGB" if img.mode.startswith(("RGB", "P")) else "L")
    fmt, options = PICTURE_ENCODINGS[kind]
    if fmt != "PNG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    data = _encode(img, fmt, options)
    if fmt != "PNG" and img.width * img.height <= SMALL_PIXELS:
        png = _encode(img, "PNG", {})
        if len(png) <= len(data):
            fmt, data = "PNG", png
    return _MIME[fmt], data


def picture_data_uri(img, kind: str = "icon") -> str:
    """A picture as a ``data:`` URI for a self-contained document, encoded as ``kind`` says (see
    :data:`PICTURE_ENCODINGS`; PNG where pixels must be exact)."""
    mime, data = picture_bytes(img, kind)
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
