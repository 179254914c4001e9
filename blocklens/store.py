"""The icon store: a content-addressed cache of rendered feature-visualization images ("icons").

Rendering an icon (optimizing an input image for a channel, neuron, direction or logit) takes seconds to
minutes; the store keeps the result so the same request is rendered once. A store is a local directory (the
default) or any `fsspec <https://filesystem-spec.readthedocs.io>`_ URL: ``IconStore("memory://cache")``
(tests), ``IconStore("s3://bucket/blocklens")`` (needs ``s3fs``), ``IconStore("gs://bucket/blocklens")``
(needs ``gcsfs``), ``IconStore("az://container/blocklens")`` (needs ``adlfs``), ``sftp://``, ...; options for
the file system (credentials, endpoints) go in ``storage_options``.

Layout
------
::

    <root>/                         default_root(): $BLOCKLENS_CACHE, $XDG_CACHE_HOME/blocklens or ~/.cache/blocklens
      icons/
        3f/3fa9...e1.png            one PNG per entry, at icons/<key[:2]>/<key>.png
        3f/.tmp-1234-9c1d...png     a write in progress (or left by a crash); never read, see clean_temp()
        corrupt/<key>.<stamp>.png   entries found corrupt, moved aside for inspection
      sprites/
        <fingerprint>/<layer>/<recipe hash>.json              a sprite sheet's index (see put_sprite())
        <fingerprint>/<layer>/<recipe hash>-<png sha>.png     the sheet it names

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
:meth:`IconStore.put` encodes the whole PNG in memory first, then writes it so that a reader sees the old
entry or the new one under the final name, never a partial file:

- a local directory: to a uniquely named temporary file (``.tmp-<pid>-<random>.png``) in the entry's own
  directory, flushed and fsynced, then ``os.replace``-d onto the final name (an atomic rename on POSIX and
  Windows), then the directory is fsynced where the platform allows; a failed put removes its temporary file.
- an object store (``s3``, ``gs``/``gcs``, ``az``/``abfs``, ``oss``, ``r2``, and ``memory``): one whole-object
  write of the final name (``fs.pipe_file``); object stores make an object visible only once it is complete.
- any other fsspec file system (``sftp``, ``ftp``, ``hdfs``, a ``LocalFileSystem`` passed as ``fs=``...):
  the temporary name first, then ``fs.mv`` onto the final name, a rename wherever the file system has one.
  ``write_mode="pipe"`` or ``"rename"`` overrides the choice.

A process killed at any moment (``kill -9``) therefore leaves either no entry or a complete one; at most a
stale temporary file, which :meth:`~IconStore.keys` ignores and :meth:`IconStore.clean_temp` removes. Two
processes putting the same key both succeed and the last write wins; both wrote a valid entry, so either
outcome is correct. Sprite sheets use the same writes (see :meth:`IconStore.put_sprite`).

Corruption
----------
:meth:`IconStore.get` reads the file, decodes the PNG fully (chunk CRCs included), recomputes the pixel
checksum and compares it and the key with the stored ones. A file that is truncated, not a PNG, has
missing or unreadable metadata, the wrong key, or pixels that do not match the checksum is moved aside
to ``icons/corrupt/`` (deleted if it cannot be moved), a :class:`CorruptIconWarning` naming the key and
the reason is emitted, and ``None`` is returned so that the caller re-renders and puts the icon again.
Before moving a file aside the store checks that it is still the file it read (same inode and mtime on a
local disk, same bytes elsewhere), so a concurrent put that just replaced it is not thrown away.
:meth:`IconStore.verify` runs the same check over every entry.

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
    "recipe_hash",
]

#: Bump when the rendering algorithm changes, so icons rendered by the old one are not reused.
RECIPE_VERSION = 2  # 2: objectives on capped layers keep their gradient past the cap

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


def _write_local(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically: a fsynced temporary file in the same directory, renamed over it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{final.suffix}"
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


# -------------------------------------------------------------------------------------- file systems

#: fsspec protocols that write whole objects, visible only once complete: put() writes the final name directly.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2", "memory"})
#: Folder (under the root) of the sprite sheets.
SPRITES_DIR = "sprites"
#: Version of the sprite index format (the ``format`` field of its JSON).
SPRITE_FORMAT = 1

_RECIPE_HASH_RE = re.compile(r"^[0-9a-f]{16}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SPRITE_PNG_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.png$")


def _is_url(root: Any) -> bool:
    return isinstance(root, str) and ("://" in root or "::" in root)


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _mtime(info: dict) -> float | None:
    """Modification time (epoch seconds) from an fsspec ``info`` dict, whatever the file system calls it."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "modified", "created", "mtime_ns"):
        v = info.get(name)
        if v is None:
            continue
        try:
            if isinstance(v, _dt.datetime):
                return (v if v.tzinfo else v.replace(tzinfo=_dt.timezone.utc)).timestamp()
            if isinstance(v, str):
                return _dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            return float(v) / (1e9 if name == "mtime_ns" else 1.0)
        except (TypeError, ValueError, OverflowError):
            continue
    return None


def recipe_hash(recipe: dict, version: int = RECIPE_VERSION) -> str:
    """A short (16 hex) hash of a recipe and :data:`RECIPE_VERSION`: names a layer's sprite sheet for that recipe."""
    if not isinstance(recipe, dict):
        raise InvalidIconError(f"recipe must be a dict, got {type(recipe).__name__}")
    text = _canonical_json({"recipe": recipe, "version": version}, "recipe")
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def layer_slug(layer: str) -> str:
    """A layer name as one safe path component (``blocks.3`` stays, ``<output>`` becomes ``_output_``)."""
    if not isinstance(layer, str) or not layer:
        raise InvalidIconError(f"layer must be a non-empty str, got {layer!r}")
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", layer)
    return "_" + slug if set(slug) <= {"."} else slug


def _finite(x: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (JSON has no NaN)."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------- store


class IconStore:
    """Icons in a local directory or behind any fsspec URL, one verified PNG per key (see the module docstring).

    ``root``: a directory path; ``None`` for :func:`default_root`; or an fsspec URL (``memory://x``,
    ``s3://bucket/prefix``, ``gs://...``, ``file:///path`` is the same as the plain path). ``storage_options``:
    keyword arguments for the fsspec file system (e.g. ``{"anon": True}`` or an ``endpoint_url`` for s3fs).
    ``fs``: an fsspec file system instance, with ``root`` a path on it (overrides the URL's). ``write_mode``:
    ``"pipe"`` (one whole-object write) or ``"rename"`` (a temporary name, then a move) for non-local file
    systems; default: ``pipe`` on object stores, ``rename`` elsewhere. Nothing is created until the first
    :meth:`put`.

    ``root`` is a :class:`~pathlib.Path` for a local directory and the URL string otherwise; :attr:`url` is
    always a string that ``IconStore(url, storage_options=...)`` reopens (in another process, a Ray worker...).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, storage_options: dict | None = None,
                 fs: Any = None, write_mode: str | None = None):
        self.storage_options: dict = dict(storage_options or {})
        self._fs = None  # an fsspec file system for non-local stores; None for a local directory
        self._base = ""  # the store's path on self._fs
        if fs is not None:
            if root is None or not str(root).strip():
                raise InvalidIconError("with fs=, root must be the store's path on that file system")
            self._fs = fs
            self._base = fs._strip_protocol(str(root)).rstrip("/")
            self.root: Any = fs.unstrip_protocol(self._base)
        elif root is None:
            self.root = default_root()
        elif isinstance(root, str) and not root.strip():
            raise InvalidIconError("root must be a directory path or an fsspec URL, got an empty string")
        elif _is_url(root):
            try:
                import fsspec
                from fsspec.implementations.local import LocalFileSystem
            except ImportError:  # pragma: no cover - fsspec is a core dependency
                raise InvalidIconError(f"store {root!r} is a URL, which needs fsspec: pip install fsspec") from None
            try:
                fs_, path = fsspec.core.url_to_fs(root, **self.storage_options)
            except ImportError as e:
                raise InvalidIconError(f"store {root!r} needs a file system package that is not installed "
                                       f"({e}): pip install 'blocklens[s3]' (s3fs) for s3://, 'blocklens[gcs]' "
                                       "(gcsfs) for gs://, 'blocklens[azure]' (adlfs) for az://") from None
            except ValueError as e:
                raise InvalidIconError(f"store {root!r} is not a URL fsspec knows: {e}") from None
            if isinstance(fs_, LocalFileSystem) and "::" not in root:
                self.root = Path(path)
            else:
                self._fs = fs_
                self._base = path.rstrip("/")
                self.root = root.rstrip("/")
        else:
            self.root = Path(root).expanduser()
        if self._fs is None:
            if write_mode not in (None, "local"):
                raise InvalidIconError(f"write_mode={write_mode!r} applies to fsspec stores only; a local directory "
                                       "always writes a fsynced temporary file and renames it")
            self.write_mode = "local"
        else:
            auto = "pipe" if set(_protocols(self._fs)) & OBJECT_STORE_PROTOCOLS else "rename"
            if write_mode not in (None, "pipe", "rename"):
                raise InvalidIconError(f"write_mode must be 'pipe' or 'rename', got {write_mode!r}")
            self.write_mode = write_mode or auto

    def __repr__(self) -> str:
        return f"IconStore({str(self.root)!r})"

    # --------------------------------------------------------------------------------------- where

    @property
    def url(self) -> str:
        """The store as a string: the directory path, or the fsspec URL. ``IconStore(store.url)`` reopens it."""
        return str(self.root)

    @property
    def is_local(self) -> bool:
        """True for a local directory (written with fsync + atomic rename)."""
        return self._fs is None

    @property
    def shared(self) -> bool:
        """Whether other processes see this store (False for ``memory://``, which lives in one process)."""
        return self._fs is None or "memory" not in _protocols(self._fs)

    @property
    def fs(self):
        """The fsspec file system (a ``LocalFileSystem`` for a local directory)."""
        if self._fs is None:
            from fsspec.implementations.local import LocalFileSystem

            return LocalFileSystem()
        return self._fs

    @property
    def icons_dir(self) -> Any:
        """``<root>/icons``: where the entries live (a Path, or a URL string for fsspec stores)."""
        return self.root / "icons" if self._fs is None else f"{self.root}/icons"

    @property
    def corrupt_dir(self) -> Any:
        """``<root>/icons/corrupt``: where corrupt entries are moved aside."""
        return self.icons_dir / "corrupt" if self._fs is None else f"{self.root}/icons/corrupt"

    def path_for(self, key: str) -> Any:
        """The entry file of ``key``: ``<root>/icons/<key[:2]>/<key>.png`` (it may not exist); a Path for a
        local store, a URL string otherwise."""
        key = _check_key(key)
        if self._fs is None:
            return self.icons_dir / key[:2] / f"{key}.png"
        return f"{self.root}/{self._entry_rel(key)}"

    @staticmethod
    def _entry_rel(key: str) -> str:
        return f"icons/{key[:2]}/{key}.png"

    def _p(self, rel: str) -> str:
        """fsspec path of ``rel`` (a '/'-separated path under the root)."""
        return f"{self._base}/{rel}" if self._base else rel

    # ------------------------------------------------------------------------- raw files (both kinds)

    def _read_rel(self, rel: str) -> bytes | None:
        """Bytes of the file at ``rel``, or None if there is none."""
        try:
            if self._fs is None:
                return (self.root / rel).read_bytes()
            return self._fs.cat_file(self._p(rel))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def _write_rel(self, rel: str, data: bytes) -> None:
        """Write a whole file atomically (see Atomicity in the module docstring)."""
        if self._fs is None:
            _write_local(self.root / rel, data)
            return
        path = self._p(rel)
        if self.write_mode == "pipe":
            self._fs.pipe_file(path, data)
            return
        parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
        tmp = f"{parent}/{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{os.path.splitext(name)[1]}"
        self._fs.makedirs(parent, exist_ok=True)
        try:
            self._fs.pipe_file(tmp, data)
            self._fs.mv(tmp, path)
        except BaseException:
            try:
                self._fs.rm(tmp)
            except Exception:
                pass
            raise

    def _remove_rel(self, rel: str) -> bool:
        try:
            if self._fs is None:
                (self.root / rel).unlink()
            else:
                self._fs.rm(self._p(rel))
            return True
        except FileNotFoundError:
            return False

    def _walk(self, rel_dir: str = "") -> Iterator[tuple[str, int, float | None]]:
        """Every file under ``rel_dir``: ``(rel path, size, mtime or None)``, unsorted."""
        if self._fs is None:
            top = self.root / rel_dir if rel_dir else self.root
            for dirpath, _, files in os.walk(top):
                d = Path(dirpath).relative_to(self.root).as_posix()
                for name in files:
                    rel = name if d == "." else f"{d}/{name}"
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue
                    yield rel, st.st_size, st.st_mtime
            return
        top = self._p(rel_dir) if rel_dir else self._base
        try:
            found = self._fs.find(top, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return
        base = self._fs._strip_protocol(self._base).rstrip("/") if self._base else ""
        for path, info in found.items():
            p = self._fs._strip_protocol(path)
            if base:
                if not p.startswith(base + "/"):
                    continue
                rel = p[len(base) + 1:]
            else:
                rel = p.lstrip("/")
            if info.get("type", "file") != "file":
                continue
            yield rel, int(info.get("size") or 0), _mtime(info)

    # ---------------------------------------------------------------------------------------- reading

    def _load(self, key: str, quarantine: bool = True) -> tuple[Icon | None, str | None]:
        """(icon, None) if valid, (None, None) if missing, (None, reason) if corrupt (moved aside if asked;
        the reason then ends with what was done with the file)."""
        if self._fs is not None:
            return self._load_fs(key, quarantine)
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

    def _load_fs(self, key: str, quarantine: bool) -> tuple[Icon | None, str | None]:
        rel = self._entry_rel(key)
        reason = None
        for _ in range(3):
            try:
                data = self._fs.cat_file(self._p(rel))
            except FileNotFoundError:
                return None, None
            except (IsADirectoryError, NotADirectoryError):
                return None, "entry path is a directory"
            try:
                if len(data) > MAX_ENTRY_BYTES:
                    raise _Corrupt(f"file is {len(data)} bytes, larger than the {MAX_ENTRY_BYTES} allowed")
                return _decode_entry(data, key), None
            except _Corrupt as e:
                reason = str(e)
            if not quarantine:
                return None, reason
            done = self._quarantine_fs(rel, key, data)
            if done is not None:
                return None, f"{reason}; {done}"
        return None, reason

    def _corrupt_name(self, key: str) -> str:
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000)) + f".{now % 1_000_000_000:09d}Z"
        return f"{key}.{stamp}.png"

    def _quarantine(self, path: Path, key: str, st: os.stat_result) -> str | None:
        """Move a corrupt entry aside (or delete it) and say what happened; None if the file changed since
        it was read (a concurrent put replaced it: read it again)."""
        try:
            if _stat_id(os.stat(path)) != _stat_id(st):
                return None
        except FileNotFoundError:
            return "already removed by another reader"
        target = self.corrupt_dir / self._corrupt_name(key)
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

    def _quarantine_fs(self, rel: str, key: str, data: bytes) -> str | None:
        """As :meth:`_quarantine` on an fsspec store: 'still the same file' means 'still the same bytes'.
        (Object stores have no compare-and-move: a put landing between that check and the move is moved
        aside too, and rendered again by the next reader.)"""
        try:
            if self._fs.cat_file(self._p(rel)) != data:
                return None
        except FileNotFoundError:
            return "already removed by another reader"
        target = f"icons/corrupt/{self._corrupt_name(key)}"
        try:
            if self.write_mode == "rename":
                self._fs.makedirs(self._p("icons/corrupt"), exist_ok=True)
            self._fs.mv(self._p(rel), self._p(target))
            return f"moved aside to {self.root}/{target}"
        except FileNotFoundError:
            return "already removed by another reader"
        except Exception:
            pass
        try:
            self._fs.rm(self._p(rel))
            return "deleted (it could not be moved aside)"
        except FileNotFoundError:
            return "already removed by another reader"
        except Exception as e:
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
        if self._fs is None:
            return self.path_for(key).is_file()
        return bool(self._fs.isfile(self._p(self._entry_rel(_check_key(key)))))

    def keys(self) -> Iterator[str]:
        """Keys of the entry files present (sorted; not verified). Temp files and ``corrupt/`` are ignored."""
        if self._fs is not None:
            found = []
            for rel, _, _ in self._walk("icons"):
                parts = rel.split("/")
                if len(parts) == 3 and _SHARD_RE.match(parts[1]):
                    m = _ENTRY_RE.match(parts[2])
                    if m and m.group(1).startswith(parts[1]):
                        found.append(m.group(1))
            yield from sorted(found)
            return
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

    def verify(self, quarantine: bool = True, progress: bool = False) -> dict:
        """Check every entry: ``{"ok": n, "corrupt": [keys]}``. Corrupt entries are moved aside to
        ``icons/corrupt/`` unless ``quarantine=False``; no warnings are emitted. ``progress``: a bar on stderr."""
        ok, corrupt = 0, []
        keys = list(self.keys())
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(keys), desc="verify", unit="icon", leave=False)
        for key in keys:
            icon, reason = self._load(key, quarantine=quarantine)
            if icon is not None:
                ok += 1
            elif reason is not None:
                corrupt.append(key)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return {"ok": ok, "corrupt": corrupt}

    # ---------------------------------------------------------------------------------------- writing

    def put(self, key: str, image: ImageInput, meta: dict | None = None) -> Any:
        """Store ``image`` under ``key`` atomically (replacing any entry) and return the entry's path
        (:meth:`path_for`).

        ``image``: see :func:`to_pixels`. ``meta``: a JSON-serializable dict; ``"key"`` and ``"created"``
        are set by the store. The PNG is encoded in memory, then written so that readers see the old entry
        or the new one, never a partial file (a local store: ``.tmp-<pid>-<random>.png`` next to the final
        file, fsynced and renamed over it; an object store: one whole-object write; see the module
        docstring); on failure the temporary file is removed and the old entry (if any) is untouched.
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
        if self._fs is None:
            final = self.path_for(key)
            _write_local(final, data)
            return final
        self._write_rel(self._entry_rel(key), data)
        return self.path_for(key)

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
        """Remove temporary files (``.tmp-*``) older than ``max_age_s`` seconds, left by interrupted writes,
        and sprite sheets that no index names any more (left when two runs rewrote a sheet at once).

        Younger ones may belong to a write in progress and are kept (on a file system that reports no
        modification time, only ``max_age_s=0`` removes them). Returns the number of files removed.
        """
        removed = 0
        cutoff = time.time() - max_age_s
        if self._fs is None:
            try:
                shards = [d for d in os.listdir(self.icons_dir) if _SHARD_RE.match(d)]
            except (FileNotFoundError, NotADirectoryError):
                shards = []
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
        else:
            for rel, _, mtime in list(self._walk("icons")):
                parts = rel.split("/")
                if len(parts) == 3 and _SHARD_RE.match(parts[1]) and parts[2].startswith(TEMP_PREFIX):
                    if (max_age_s <= 0 or (mtime is not None and mtime < cutoff)) and self._remove_rel(rel):
                        removed += 1
        return removed + self._clean_sprites(cutoff, max_age_s)

    def _clean_sprites(self, cutoff: float, max_age_s: float) -> int:
        files = list(self._walk(SPRITES_DIR))
        named = set()
        for rel, _, _ in files:
            d, name = rel.rsplit("/", 1)
            if name.endswith(".json") and not name.startswith(TEMP_PREFIX):
                index = self._read_json(rel)
                if index and isinstance(index.get("image"), str):
                    named.add(f"{d}/{index['image']}")
        removed = 0
        for rel, _, mtime in files:
            name = rel.rsplit("/", 1)[1]
            stale = name.startswith(TEMP_PREFIX) or (_SPRITE_PNG_RE.match(name) and rel not in named)
            if stale and (max_age_s <= 0 or (mtime is not None and mtime < cutoff)) and self._remove_rel(rel):
                removed += 1
        return removed

    # ---------------------------------------------------------------------------------------- sprites

    def _sprite_rel(self, fingerprint: str, layer: str, recipe: dict | str) -> tuple[str, str]:
        """(directory, recipe hash) of a sprite sheet."""
        if not isinstance(fingerprint, str) or not _NAME_RE.match(fingerprint) or set(fingerprint) <= {"."}:
            raise InvalidIconError(f"invalid model fingerprint {fingerprint!r}")
        rh = recipe if isinstance(recipe, str) else recipe_hash(recipe)
        if not _RECIPE_HASH_RE.match(rh):
            raise InvalidIconError(f"invalid recipe hash {rh!r}: expected 16 lowercase hex (see recipe_hash())")
        return f"{SPRITES_DIR}/{fingerprint}/{layer_slug(layer)}", rh

    def _read_json(self, rel: str) -> dict | None:
        data = self._read_rel(rel)
        if data is None:
            return None
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def put_sprite(self, fingerprint: str, layer: str, recipe: dict, image: ImageInput, index: dict) -> str:
        """Write a layer's sprite sheet and its index; return the index's URL (or path).

        ``image``: the sheet (see :func:`to_pixels`); ``index``: a JSON dict describing its cells (what
        :mod:`blocklens.precompute` writes: ``model``, ``columns``, ``icon_size``, ``units``...). The store
        adds ``format``, ``fingerprint``, ``layer``, ``recipe``, ``recipe_hash``, ``recipe_version``,
        ``image`` (the sheet's file name), ``png_sha256``, ``width``, ``height`` and ``created``.

        The sheet is written under a name that includes its own hash (``<recipe hash>-<png sha>.png``), then
        the index (``<recipe hash>.json``), each atomically: the index is the commit point, so a reader never
        pairs an index with another run's sheet. The sheet the previous index named is then removed.
        """
        d, rh = self._sprite_rel(fingerprint, layer, recipe)
        if not isinstance(index, dict):
            raise InvalidIconError(f"index must be a dict, got {type(index).__name__}")
        pixels = to_pixels(image)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        name = f"{rh}-{sha[:16]}.png"
        full = _finite(dict(index))
        full.update(format=SPRITE_FORMAT, fingerprint=fingerprint, layer=layer, recipe=recipe, recipe_hash=rh,
                    recipe_version=RECIPE_VERSION, image=name, png_sha256=sha, width=int(pixels.shape[1]),
                    height=int(pixels.shape[0]),
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        text = json.dumps(full, indent=1, sort_keys=True, allow_nan=False)
        previous = self._read_json(f"{d}/{rh}.json")
        self._write_rel(f"{d}/{name}", data)
        self._write_rel(f"{d}/{rh}.json", text.encode("utf-8"))
        old = previous.get("image") if previous else None
        if isinstance(old, str) and old != name and _SPRITE_PNG_RE.match(old):
            try:
                self._remove_rel(f"{d}/{old}")
            except Exception:  # best effort; clean_temp() removes it later
                pass
        return f"{self.root}/{d}/{rh}.json" if self._fs is not None else str(self.root / d / f"{rh}.json")

    def sprite_index(self, fingerprint: str, layer: str, recipe: dict | str) -> dict | None:
        """The index of a layer's sprite sheet for ``recipe`` (a dict, or its :func:`recipe_hash`), or None."""
        d, rh = self._sprite_rel(fingerprint, layer, recipe)
        index = self._read_json(f"{d}/{rh}.json")
        if index is None or index.get("layer") != layer or index.get("fingerprint") != fingerprint:
            return None
        return index

    def sprite_bytes(self, fingerprint: str, layer: str, recipe: dict | str) -> tuple[bytes, dict] | None:
        """``(PNG bytes, index)`` of a layer's sprite sheet, checked against the index's sha256; None if the
        store has none (or only a damaged one: a :class:`CorruptIconWarning` says so). For serving as is."""
        reason = "missing"
        for _ in range(3):  # retried when a concurrent writer replaced the sheet between the two reads
            index = self.sprite_index(fingerprint, layer, recipe)
            if index is None:
                return None
            name = index.get("image")
            if not isinstance(name, str) or not _SPRITE_PNG_RE.match(name):
                reason = f"index names no valid sheet ({name!r})"
                break
            d, _ = self._sprite_rel(fingerprint, layer, recipe)
            data = self._read_rel(f"{d}/{name}")
            if data is not None and hashlib.sha256(data).hexdigest() == index.get("png_sha256"):
                return data, index
            reason = "sheet missing" if data is None else "sheet does not match the index's sha256"
        warnings.warn(f"sprite sheet of layer {layer!r} (model {fingerprint}) in {self.url} is unusable: {reason}; "
                      "precompute writes it again", CorruptIconWarning, stacklevel=2)
        return None

    def sprite(self, fingerprint: str, layer: str, recipe: dict | str) -> tuple[Image.Image, dict] | None:
        """``(sheet as a PIL image, index)`` of a layer's sprite sheet for ``recipe``, or None.

        The index (JSON) gives ``columns``, ``rows``, ``icon_size`` ([H, W]) and per unit its ``key``,
        ``unit``, ``index``, ``label``, ``row``/``col``, ``x``/``y`` (top-left pixel), ``objective`` and
        ``dead``; see :func:`blocklens.precompute.write_sprite`.
        """
        got = self.sprite_bytes(fingerprint, layer, recipe)
        if got is None:
            return None
        data, index = got
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
            return im.copy(), index

    def sprites(self, fingerprint: str | None = None, layer: str | None = None) -> list[dict]:
        """The index of every sprite sheet in the store (optionally of one model fingerprint and/or layer)."""
        out = []
        for rel, _, _ in self._walk(SPRITES_DIR):
            parts = rel.split("/")
            if len(parts) != 4 or not parts[3].endswith(".json") or parts[3].startswith(TEMP_PREFIX):
                continue
            if fingerprint is not None and parts[1] != fingerprint:
                continue
            index = self._read_json(rel)
            if not index or (layer is not None and index.get("layer") != layer):
                continue
            out.append(index)
        return sorted(out, key=lambda i: (str(i.get("fingerprint")), str(i.get("layer")), str(i.get("recipe_hash"))))

    # ------------------------------------------------------------------------------------------ info

    def info(self) -> dict:
        """What the store holds, from a listing (nothing is decoded): entry count and bytes, temporary and
        quarantined files, and a summary of every sprite sheet."""
        entries = size = temp = corrupt = sprite_bytes = 0
        for rel, n, _ in self._walk(""):
            parts = rel.split("/")
            name = parts[-1]
            if parts[0] == "icons" and len(parts) == 3 and _SHARD_RE.match(parts[1]):
                m = _ENTRY_RE.match(name)
                if m and m.group(1).startswith(parts[1]):
                    entries += 1
                    size += n
                elif name.startswith(TEMP_PREFIX):
                    temp += 1
            elif parts[0] == "icons" and len(parts) > 2 and parts[1] == "corrupt":
                corrupt += 1
            elif parts[0] == SPRITES_DIR:
                if name.startswith(TEMP_PREFIX):
                    temp += 1
                else:
                    sprite_bytes += n
        sheets = [{k: s.get(k) for k in ("model", "fingerprint", "layer", "unit_kind", "recipe_hash", "count",
                                         "total", "complete", "icon_size", "image")}
                  | {"size": (s.get("recipe") or {}).get("size"), "steps": (s.get("recipe") or {}).get("steps")}
                  for s in self.sprites()]
        backend = "local" if self._fs is None else "+".join(_protocols(self._fs))
        return {"store": self.url, "backend": backend, "write_mode": self.write_mode, "entries": entries,
                "entry_bytes": size, "temp_files": temp, "corrupt_files": corrupt, "sprite_bytes": sprite_bytes,
                "sprites": sheets}
