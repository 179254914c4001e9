"""The icon store: a content-addressed cache of rendered feature-visualization images ("icons").

Rendering an icon (optimizing an input image for a channel, neuron, direction or logit) takes seconds to
minutes; the store keeps the result on disk so the same request is rendered once.

Layout
------
::

    <root>/                         default_root(): $BLOCKLENS_CACHE, $XDG_CACHE_HOME/blocklens or ~/.cache/blocklens
      icons/
        3f/3fa9...e1.png            one PNG per entry, at icons/<key[:2]>/<key>.png
        3f/.tmp-1234-9c1d...png     a write in progress (or left by a crash); never read, see clean_temp()
        corrupt/<key>.<stamp>.png   entries found corrupt, moved aside for inspection

Each PNG carries its own metadata: an iTXt chunk named ``blocklens`` holds the JSON
``{"format": 1, "key": ..., "shape": [H, W, C], "sha256": ..., "meta": {...}}`` where ``sha256`` is the
digest of the shape and the raw uint8 pixel bytes (:func:`pixel_checksum`), and ``meta`` the caller's
metadata plus ``"key"`` and ``"created"`` (UTC, ISO 8601), both set by the store.

The key
-------
:func:`icon_key` is the sha256 hex digest of a canonical JSON (sorted keys, compact separators, ASCII) of
everything that determines the pixels: the model fingerprint, the layer, the unit (``"channel:5"``,
``"neuron:5@3,4"``, ``"direction:<direction_hash>"``, ``"logit:282"``), the recipe (size, steps, lr, seed,
parametrization, transforms... any JSON dict; ``1`` and ``1.0`` are different recipes) and
:data:`RECIPE_VERSION`, bumped whenever the rendering algorithm changes so that old icons are not reused.
Keys are 64 lowercase hex characters; anything else is refused with :class:`ValueError` (so a key can
never name a path outside the store).

Atomicity
---------
:meth:`IconStore.put` encodes the whole PNG in memory first, then writes it to a uniquely named temporary
file (``.tmp-<pid>-<random>.png``) in the entry's own directory, flushes and fsyncs it, and
``os.replace``-s it onto the final name (an atomic rename on POSIX and Windows), then fsyncs the directory
where the platform allows. A crash at any moment leaves either the old entry or the new one under the
final name, never a partial file; a failed put removes its temporary file. Two processes putting the same
key both succeed and the last rename wins; both wrote a valid entry, so either outcome is correct. Stale
temporary files left by killed processes are ignored by :meth:`~IconStore.keys` and removed by
:meth:`IconStore.clean_temp`.

Corruption
----------
:meth:`IconStore.get` reads the file, decodes the PNG fully (chunk CRCs included), recomputes the pixel
checksum and compares it and the key with the stored ones. A file that is truncated, not a PNG, has
missing or unreadable metadata, the wrong key, or pixels that do not match the checksum is moved aside
to ``icons/corrupt/`` (deleted if it cannot be moved), a :class:`CorruptIconWarning` naming the key and
the reason is emitted, and ``None`` is returned so that the caller re-renders and puts the icon again.
Before moving a file aside the store checks that it is still the file it read, so a concurrent put that
just replaced it is not thrown away. :meth:`IconStore.verify` runs the same check over every entry.

``key in store`` performs that same full verification (equivalent to ``store.get(key) is not None``);
:meth:`IconStore.exists` is the cheap existence check, and ``len(store)``/:meth:`IconStore.keys` list the
entry files without decoding them.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import BlocklensError

__all__ = [
    "RECIPE_VERSION",
    "CorruptIconWarning",
    "Icon",
    "IconStore",
    "InvalidIconError",
    "default_root",
    "direction_hash",
    "icon_key",
    "pixel_checksum",
]

#: Bump when the rendering algorithm changes, so icons rendered by the old one are not reused.
RECIPE_VERSION = 1

#: Version of the on-disk entry format (the ``format`` field of the ``blocklens`` chunk).
FORMAT_VERSION = 1
#: Name of the PNG text chunk holding the entry's metadata and checksum.
CHUNK = "blocklens"
#: Largest serialized metadata accepted by put() (Pillow refuses larger text chunks on read).
MAX_META_BYTES = 512 * 1024
#: Entry files larger than this are treated as corrupt without being decoded.
MAX_ENTRY_BYTES = 256 * 1024 * 1024
#: Prefix of temporary files written by put().
TEMP_PREFIX = ".tmp-"

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_RE = re.compile(r"^([0-9a-f]{64})\.png$")
_SHARD_RE = re.compile(r"^[0-9a-f]{2}$")

ImageInput = Union[np.ndarray, Image.Image, Any]  # Any: a torch.Tensor (torch is not imported here)


class InvalidIconError(BlocklensError, ValueError):
    """An image, key or metadata that cannot be stored; the message says what was found and what is valid."""


class CorruptIconWarning(UserWarning):
    """An entry on disk was unreadable or failed its checksum; it was moved aside and must be re-rendered."""


# --------------------------------------------------------------------------------------------- paths


def default_root() -> Path:
    """The cache root: ``$BLOCKLENS_CACHE`` if set, else ``$XDG_CACHE_HOME/blocklens``, else
    ``~/.cache/blocklens``. Icons live under ``<root>/icons``.

    Empty variables are ignored, and so is a relative ``$XDG_CACHE_HOME`` (as the XDG spec requires).
    """
    env = os.environ.get("BLOCKLENS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "blocklens"
    return Path.home() / ".cache" / "blocklens"


# ----------------------------------------------------------------------------------------------- keys


def _canonical_json(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidIconError(f"{what} must be JSON-serializable (dicts with str keys, lists, str, int, "
                               f"finite float, bool, None): {e}") from None


def icon_key(model_fingerprint: str, layer: str, unit: str, recipe: dict, version: int = RECIPE_VERSION) -> str:
    """The store key of an icon: sha256 hex digest of a canonical JSON of all inputs.

    ``unit`` names what was visualized: ``"channel:5"``, ``"neuron:5@3,4"``,
    ``"direction:<direction_hash(v)>"``, ``"logit:282"``. ``recipe`` is any JSON dict describing the
    rendering (size, steps, lr, seed, param, transforms...); values are hashed as given, so ``1`` and
    ``1.0`` give different keys. The key is stable across calls, processes and dict key order.
    """
    for name, value in (("model_fingerprint", model_fingerprint), ("layer", layer), ("unit", unit)):
        if not isinstance(value, str) or not value:
            raise InvalidIconError(f"{name} must be a non-empty str, got {value!r}")
    if not isinstance(recipe, dict):
        raise InvalidIconError(f"recipe must be a dict, got {type(recipe).__name__}")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidIconError(f"version must be an int, got {version!r}")
    payload = {"model": model_fingerprint, "layer": layer, "unit": unit, "recipe": recipe, "version": version}
    text = _canonical_json(payload, "recipe")
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def direction_hash(vector: Any) -> str:
    """A short (16 hex) stable hash of a direction vector (torch tensor, numpy array or sequence).

    Hashes the shape and the float32 little-endian bytes, so the same vector gives the same hash whatever
    its original dtype, device or memory layout; ``-0.0`` and ``0.0`` hash alike.
    """
    if hasattr(vector, "detach") and hasattr(vector, "cpu"):  # torch.Tensor, without importing torch here
        vector = vector.detach().cpu().float().numpy()
    try:
        arr = np.asarray(vector, dtype="<f4")
    except (TypeError, ValueError) as e:
        raise InvalidIconError(f"direction must be a numeric vector, got {type(vector).__name__}: {e}") from None
    if arr.size == 0:
        raise InvalidIconError(f"direction must not be empty, got shape {tuple(arr.shape)}")
    arr = np.ascontiguousarray(arr + np.float32(0.0))  # -0.0 -> 0.0
    h = hashlib.sha256()
    h.update(("f4le:" + ",".join(map(str, arr.shape)) + ":").encode("ascii"))
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InvalidIconError(f"invalid icon key {key!r}: expected 64 lowercase hex characters (see icon_key())")
    return key


# --------------------------------------------------------------------------------------------- images


def pixel_checksum(pixels: np.ndarray) -> str:
    """sha256 of an image's shape and raw uint8 pixel bytes (row-major, HWC)."""
    arr = np.ascontiguousarray(pixels)
    h = hashlib.sha256()
    h.update(("uint8:" + "x".join(map(str, arr.shape)) + ":").encode("ascii"))
    h.update(arr.tobytes())
    return h.hexdigest()


_EXPECTED = "(H, W, 3) or (H, W, 4) HWC, or (3, H, W) or (4, H, W) CHW, optionally with a leading batch dim of 1"


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


@dataclass
class Icon:
    """A cached icon: its pixels, the metadata given at put() (plus ``"key"`` and ``"created"``), its key."""

    image: np.ndarray  # uint8, (H, W, 3) RGB or (H, W, 4) RGBA
    meta: dict = field(default_factory=dict)
    key: str = ""

    def to_pil(self) -> Image.Image:
        """The icon as a PIL image (mode RGB or RGBA)."""
        return Image.fromarray(np.ascontiguousarray(self.image))


class _Corrupt(Exception):
    """Internal: why an entry failed verification."""


def _decode_entry(data: bytes, key: str) -> Icon:
    """Decode and verify an entry's bytes; raise :class:`_Corrupt` with the reason if anything is wrong."""
    if not data:
        raise _Corrupt("empty file")
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise _Corrupt("not a PNG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
                img.load()
                mode = img.mode
                pixels = np.array(img, dtype=np.uint8) if mode in ("RGB", "RGBA") else None
                text = dict(getattr(img, "text", {}) or {})
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error, EOFError...
        raise _Corrupt(f"PNG does not decode ({type(e).__name__}: {e})") from None
    if pixels is None:
        raise _Corrupt(f"unexpected PNG mode {mode!r}; entries are RGB or RGBA")
    raw = text.get(CHUNK)
    if raw is None:
        raise _Corrupt(f"no {CHUNK!r} metadata chunk")
    try:
        record = json.loads(str(raw))
    except ValueError as e:
        raise _Corrupt(f"metadata is not valid JSON ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("meta"), dict):
        raise _Corrupt("metadata is not a dict with a 'meta' dict")
    if record.get("format") != FORMAT_VERSION:
        raise _Corrupt(f"unsupported entry format {record.get('format')!r} (expected {FORMAT_VERSION})")
    if record.get("key") != key:
        raise _Corrupt(f"key mismatch: the file holds key {record.get('key')!r}")
    if record.get("shape") != list(pixels.shape):
        raise _Corrupt(f"shape mismatch: metadata says {record.get('shape')!r}, pixels are {list(pixels.shape)}")
    if record.get("sha256") != pixel_checksum(pixels):
        raise _Corrupt("pixel checksum mismatch")
    return Icon(image=pixels, meta=record["meta"], key=key)


def _encode_entry(key: str, pixels: np.ndarray, meta: dict) -> bytes:
    record = {"format": FORMAT_VERSION, "key": key, "shape": list(pixels.shape),
              "sha256": pixel_checksum(pixels), "meta": meta}
    text = _canonical_json(record, "meta")
    if len(text) > MAX_META_BYTES:
        raise InvalidIconError(f"metadata is {len(text)} bytes serialized; at most {MAX_META_BYTES} are allowed")
    info = PngImagePlugin.PngInfo()
    info.add_itxt(CHUNK, text, zip=True)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", pnginfo=info, compress_level=6)
    return buf.getvalue()


def _fsync_dir(path: Path) -> None:
    """Persist a rename: fsync the directory (POSIX only; best effort)."""
    if sys.platform.startswith("win"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stat_id(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------------------------------------- store


class IconStore:
    """Icons on a local directory, one verified PNG per key (see the module docstring for the layout).

    ``root=None`` uses :func:`default_root`. Nothing is created until the first :meth:`put`.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            root = default_root()
        elif isinstance(root, str) and not root.strip():
            raise InvalidIconError("root must be a directory path, got an empty string")
        self.root: Path = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"IconStore({str(self.root)!r})"

    @property
    def icons_dir(self) -> Path:
        """``<root>/icons``: where the entries live."""
        return self.root / "icons"

    @property
    def corrupt_dir(self) -> Path:
        """``<root>/icons/corrupt``: where corrupt entries are moved aside."""
        return self.icons_dir / "corrupt"

    def path_for(self, key: str) -> Path:
        """The entry file of ``key``: ``<root>/icons/<key[:2]>/<key>.png`` (it may not exist)."""
        key = _check_key(key)
        return self.icons_dir / key[:2] / f"{key}.png"

    # ---------------------------------------------------------------------------------------- reading

    def _load(self, key: str, quarantine: bool = True) -> tuple[Icon | None, str | None]:
        """(icon, None) if valid, (None, None) if missing, (None, reason) if corrupt (moved aside if asked;
        the reason then ends with what was done with the file)."""
        path = self.path_for(key)
        reason = None
        for _ in range(3):  # retried only when a concurrent put replaced the file while we read it
            try:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    if st.st_size > MAX_ENTRY_BYTES:
                        data = b""
                        reason = f"file is {st.st_size} bytes, larger than the {MAX_ENTRY_BYTES} allowed"
                    else:
                        data = f.read()
            except FileNotFoundError:
                return None, None
            except IsADirectoryError:
                return None, "entry path is a directory"
            try:
                if reason is None:
                    return _decode_entry(data, key), None
            except _Corrupt as e:
                reason = str(e)
            if not quarantine:
                return None, reason
            done = self._quarantine(path, key, st)
            if done is not None:
                return None, f"{reason}; {done}"
            reason = None  # the file changed under us: read the new one
        return None, reason

    def _quarantine(self, path: Path, key: str, st: os.stat_result) -> str | None:
        """Move a corrupt entry aside (or delete it) and say what happened; None if the file changed since
        it was read (a concurrent put replaced it: read it again)."""
        try:
            if _stat_id(os.stat(path)) != _stat_id(st):
                return None
        except FileNotFoundError:
            return "already removed by another reader"
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000)) + f".{now % 1_000_000_000:09d}Z"
        target = self.corrupt_dir / f"{key}.{stamp}.png"
        try:
            self.corrupt_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            return f"moved aside to {target}"
        except FileNotFoundError:
            return "already removed by another reader"
        except OSError:
            pass
        try:
            os.unlink(path)
            return "deleted (it could not be moved aside)"
        except FileNotFoundError:
            return "already removed by another reader"
        except OSError as e:  # read-only store: put() will still replace it
            return f"left in place: it could not be moved or deleted ({e})"

    def get(self, key: str) -> Icon | None:
        """The icon stored under ``key``, verified; ``None`` if there is none.

        A corrupt entry (truncated, not a PNG, metadata unreadable, wrong key, checksum mismatch) is moved
        to ``icons/corrupt/``, a :class:`CorruptIconWarning` naming the key and the reason is emitted, and
        ``None`` is returned so the caller re-renders it.
        """
        icon, reason = self._load(_check_key(key))
        if reason is not None:
            warnings.warn(f"icon {key} in {self.icons_dir} is corrupt: {reason}. Returning None so that it is "
                          "re-rendered.", CorruptIconWarning, stacklevel=2)
        return icon

    def __contains__(self, key: object) -> bool:
        """Whether a *valid* entry exists: a full verification, same as ``get(key) is not None``
        (a corrupt entry is moved aside with a warning). Use :meth:`exists` for a cheap check."""
        if not isinstance(key, str) or not _KEY_RE.match(key):
            return False
        return self.get(key) is not None

    def exists(self, key: str) -> bool:
        """Cheap check: whether an entry file exists for ``key``, without reading or verifying it."""
        return self.path_for(key).is_file()

    def keys(self) -> Iterator[str]:
        """Keys of the entry files present (sorted; not verified). Temp files and ``corrupt/`` are ignored."""
        try:
            shards = sorted(d for d in os.listdir(self.icons_dir) if _SHARD_RE.match(d))
        except (FileNotFoundError, NotADirectoryError):
            return
        for shard in shards:
            try:
                names = sorted(os.listdir(self.icons_dir / shard))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                m = _ENTRY_RE.match(name)
                if m and m.group(1).startswith(shard):
                    yield m.group(1)

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def __len__(self) -> int:
        """Number of entry files present (not verified; see :meth:`verify`)."""
        return sum(1 for _ in self.keys())

    def verify(self, quarantine: bool = True) -> dict:
        """Check every entry: ``{"ok": n, "corrupt": [keys]}``. Corrupt entries are moved aside to
        ``icons/corrupt/`` unless ``quarantine=False``; no warnings are emitted."""
        ok, corrupt = 0, []
        for key in list(self.keys()):
            icon, reason = self._load(key, quarantine=quarantine)
            if icon is not None:
                ok += 1
            elif reason is not None:
                corrupt.append(key)
        return {"ok": ok, "corrupt": corrupt}

    # ---------------------------------------------------------------------------------------- writing

    def put(self, key: str, image: ImageInput, meta: dict | None = None) -> Path:
        """Store ``image`` under ``key`` atomically (replacing any entry) and return the entry's path.

        ``image``: see :func:`to_pixels`. ``meta``: a JSON-serializable dict; ``"key"`` and ``"created"``
        are set by the store. The PNG is encoded in memory, written to ``.tmp-<pid>-<random>.png`` next to
        the final file, fsynced and renamed over it, so readers see the old entry or the new one, never a
        partial file; on failure the temporary file is removed and the old entry (if any) is untouched.
        """
        key = _check_key(key)
        pixels = to_pixels(image)
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise InvalidIconError(f"meta must be a dict or None, got {type(meta).__name__}")
        full_meta = dict(meta)
        full_meta["key"] = key
        full_meta["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        data = _encode_entry(key, pixels, full_meta)

        final = self.path_for(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}.png"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(final.parent)
        return final

    def get_or_put(self, key: str, render: Callable[[], ImageInput], meta: dict | None = None) -> Icon:
        """The cached icon for ``key``, or ``render()`` it, store it and return it."""
        icon = self.get(key)
        if icon is not None:
            return icon
        self.put(key, render(), meta)
        icon = self.get(key)
        if icon is None:  # pragma: no cover - only if the fresh entry vanished or broke at once
            raise OSError(f"icon {key} could not be read back from {self.path_for(key)} right after put()")
        return icon

    def clean_temp(self, max_age_s: float = 3600) -> int:
        """Remove temporary files (``.tmp-*``) older than ``max_age_s`` seconds, left by interrupted puts.

        Younger ones may belong to a put in progress and are kept. Returns the number removed.
        """
        removed = 0
        cutoff = time.time() - max_age_s
        try:
            shards = [d for d in os.listdir(self.icons_dir) if _SHARD_RE.match(d)]
        except (FileNotFoundError, NotADirectoryError):
            return 0
        for shard in shards:
            try:
                names = os.listdir(self.icons_dir / shard)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                if not name.startswith(TEMP_PREFIX):
                    continue
                p = self.icons_dir / shard / name
                try:
                    if p.is_file() and p.stat().st_mtime < cutoff:
                        p.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed
