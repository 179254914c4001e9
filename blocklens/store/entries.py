"""The entry file: a PNG whose ``blocklens`` iTXt chunk holds its key, shape, pixel checksum and metadata; Icon."""
from __future__ import annotations

import io
import json
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import InvalidIconError
from .keys import canonical_json, pixel_checksum

#: Version of the on-disk entry format (the ``format`` field of the ``blocklens`` chunk).
FORMAT_VERSION = 1
#: Name of the PNG text chunk holding the entry's metadata and checksum.
CHUNK = "blocklens"
#: Largest serialized metadata accepted by put() (Pillow refuses larger text chunks on read).
MAX_META_BYTES = 512 * 1024
#: Entry files larger than this are treated as corrupt without being decoded.
MAX_ENTRY_BYTES = 256 * 1024 * 1024
#: Folder (under the root) of the entries, and of the corrupt ones moved aside.
ICONS_DIR = "icons"
CORRUPT_DIR = "icons/corrupt"

ImageInput = Union[np.ndarray, Image.Image, Any]  # Any: a torch.Tensor (torch is not imported here)

_ENTRY_RE = re.compile(r"^([0-9a-f]{64})\.png$")
_SHARD_RE = re.compile(r"^[0-9a-f]{2}$")
_EXPECTED = "(H, W, 3) or (H, W, 4) HWC, or (3, H, W) or (4, H, W) CHW, optionally with a leading batch dim of 1"


def entry_rel(key: str) -> str:
    """Where the entry of a (checked) key lives under the root: ``icons/<key[:2]>/<key>.png``."""
    return f"{ICONS_DIR}/{key[:2]}/{key}.png"


def entry_key(rel: str) -> str | None:
    """The key of the entry file at ``rel`` (a path under the root), or None if ``rel`` is no entry's path."""
    parts = rel.split("/")
    if len(parts) != 3 or parts[0] != ICONS_DIR or not _SHARD_RE.match(parts[1]):
        return None
    m = _ENTRY_RE.match(parts[2])
    return m.group(1) if m and m.group(1).startswith(parts[1]) else None


def in_shard(rel: str) -> bool:
    """Whether ``rel`` is a file directly in a shard folder ``icons/<2 hex>/`` (an entry, or a write of one)."""
    parts = rel.split("/")
    return len(parts) == 3 and parts[0] == ICONS_DIR and bool(_SHARD_RE.match(parts[1]))


def corrupt_rel(key: str) -> str:
    """A fresh name for a corrupt entry moved aside: ``icons/corrupt/<key>.<UTC stamp to the ns>.png``."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000)) + f".{now % 1_000_000_000:09d}Z"
    return f"{CORRUPT_DIR}/{key}.{stamp}.png"


def to_pixels(image: ImageInput) -> np.ndarray:
    """Normalize an image to a C-contiguous uint8 ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA array.

    Accepts a PIL image (any mode: converted to RGB, or RGBA when it has transparency), a numpy array or a
    torch tensor, HWC or CHW (an array whose last dim is 3 or 4 is read as HWC), optionally with a leading
    batch dimension of 1; uint8 as is, or float in [0, 1] (``round(x * 255)``, clipped to 0..255).
    Anything else raises :class:`InvalidIconError` (a ``ValueError``) naming what was found.
    """
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "RGBA"):
            has_alpha = image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch.Tensor
        t = image.detach().cpu()
        if t.is_floating_point() and str(t.dtype) not in ("torch.float32", "torch.float64"):
            t = t.float()  # float16 / bfloat16 have no numpy equivalent (bfloat16) or lose nothing here
        image = t.numpy()
    if not isinstance(image, np.ndarray):
        raise InvalidIconError(f"image must be a numpy array, torch tensor or PIL image, got {type(image).__name__}")
    arr = image
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise InvalidIconError(f"image has shape {tuple(image.shape)}; expected {_EXPECTED}")
    if arr.shape[-1] in (3, 4):
        pass
    elif arr.shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    else:
        raise InvalidIconError(f"image has shape {tuple(image.shape)}; expected {_EXPECTED}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidIconError(f"image has shape {tuple(image.shape)}, which is empty; expected {_EXPECTED}")
    if arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidIconError(f"float image of shape {tuple(image.shape)} contains NaN or infinite values")
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    else:
        raise InvalidIconError(f"image has dtype {arr.dtype} (shape {tuple(image.shape)}); expected uint8 "
                               "(0..255) or float in [0, 1]")
    return np.ascontiguousarray(arr)


def png_bytes(pixels: np.ndarray, pnginfo: PngImagePlugin.PngInfo | None = None) -> bytes:
    """``pixels`` (see :func:`to_pixels`) encoded as a PNG, with the text chunks of ``pnginfo`` if given."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", pnginfo=pnginfo, compress_level=6)
    return buf.getvalue()


@dataclass
class Icon:
    """A cached icon: its pixels, the metadata given at put() (plus ``"key"`` and ``"created"``), its key, and
    where it came from (``source``: ``"store"`` the user's store, ``"pack"`` the reference pack beneath it,
    ``"rendered"`` just now; not part of the stored entry)."""

    image: np.ndarray  # uint8, (H, W, 3) RGB or (H, W, 4) RGBA
    meta: dict = field(default_factory=dict)
    key: str = ""
    source: str = "store"

    def to_pil(self) -> Image.Image:
        """The icon as a PIL image (mode RGB or RGBA)."""
        return Image.fromarray(np.ascontiguousarray(self.image))


class CorruptEntry(Exception):
    """Why an entry's bytes failed verification (see :func:`decode_entry`)."""


def encode_entry(key: str, pixels: np.ndarray, meta: dict) -> bytes:
    """The entry file of ``key``: ``pixels`` as a PNG carrying the ``blocklens`` chunk with ``meta``."""
    record = {"format": FORMAT_VERSION, "key": key, "shape": list(pixels.shape),
              "sha256": pixel_checksum(pixels), "meta": meta}
    text = canonical_json(record, "meta")
    if len(text) > MAX_META_BYTES:
        raise InvalidIconError(f"metadata is {len(text)} bytes serialized; at most {MAX_META_BYTES} are allowed")
    info = PngImagePlugin.PngInfo()
    info.add_itxt(CHUNK, text, zip=True)
    return png_bytes(pixels, info)


def decode_entry(data: bytes, key: str) -> Icon:
    """Decode and verify an entry's bytes; raise :class:`CorruptEntry` with the reason if anything is wrong."""
    if not data:
        raise CorruptEntry("empty file")
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise CorruptEntry("not a PNG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
                img.load()
                mode = img.mode
                pixels = np.array(img, dtype=np.uint8) if mode in ("RGB", "RGBA") else None
                text = dict(getattr(img, "text", {}) or {})
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error, EOFError...
        raise CorruptEntry(f"PNG does not decode ({type(e).__name__}: {e})") from None
    if pixels is None:
        raise CorruptEntry(f"unexpected PNG mode {mode!r}; entries are RGB or RGBA")
    raw = text.get(CHUNK)
    if raw is None:
        raise CorruptEntry(f"no {CHUNK!r} metadata chunk")
    try:
        record = json.loads(str(raw))
    except ValueError as e:
        raise CorruptEntry(f"metadata is not valid JSON ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("meta"), dict):
        raise CorruptEntry("metadata is not a dict with a 'meta' dict")
    if record.get("format") != FORMAT_VERSION:
        raise CorruptEntry(f"unsupported entry format {record.get('format')!r} (expected {FORMAT_VERSION})")
    if record.get("key") != key:
        raise CorruptEntry(f"key mismatch: the file holds key {record.get('key')!r}")
    if record.get("shape") != list(pixels.shape):
        raise CorruptEntry(f"shape mismatch: metadata says {record.get('shape')!r}, pixels are {list(pixels.shape)}")
    if record.get("sha256") != pixel_checksum(pixels):
        raise CorruptEntry("pixel checksum mismatch")
    return Icon(image=pixels, meta=record["meta"], key=key)
