"""IconStore: verified icon entries in a store's files (put, get, keys, verify, quarantine, clean_temp, info)."""
from __future__ import annotations

import datetime as _dt
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from .entries import (
    CORRUPT_DIR,
    ICONS_DIR,
    MAX_ENTRY_BYTES,
    CorruptEntry,
    Icon,
    ImageInput,
    corrupt_rel,
    decode_entry,
    encode_entry,
    entry_key,
    entry_rel,
    in_shard,
    to_pixels,
)
from .errors import CorruptIconWarning, InvalidIconError
from .files import TEMP_PREFIX, StoreFiles, protocols
from .keys import KEY_RE, check_key
from .pack import PACK_DIR, pack_enabled, pack_manifest
from .sprites import SPRITES_DIR, SpriteSheets, stale_sprite_files


def _is_entry_temp(rel: str) -> bool:
    """Whether ``rel`` is a temporary file of a write to an entry (in progress, or left by a crash)."""
    return in_shard(rel) and rel.rsplit("/", 1)[1].startswith(TEMP_PREFIX)


class IconStore(SpriteSheets):
    """Icons in a local directory or behind any fsspec URL, one verified PNG per key (see :mod:`blocklens.store`).

    ``root``: a directory path; ``None`` for :func:`default_root`; or an fsspec URL (``memory://x``,
    ``s3://bucket/prefix``, ``gs://...``, ``file:///path`` is the same as the plain path). ``storage_options``:
    keyword arguments for the fsspec file system (e.g. ``{"anon": True}`` or an ``endpoint_url`` for s3fs).
    ``fs``: an fsspec file system instance, with ``root`` a path on it (overrides the URL's). ``write_mode``:
    ``"pipe"`` (one whole-object write) or ``"rename"`` (a temporary name, then a move) for non-local file
    systems; default: ``pipe`` on object stores, ``rename`` elsewhere. Nothing is created until the first
    :meth:`put`.

    ``root`` is a :class:`~pathlib.Path` for a local directory and the URL string otherwise; :attr:`url` is
    always a string that ``IconStore(url, storage_options=...)`` reopens (in another process, a Ray worker...).
    :attr:`files` reads and writes any other file under the root (the activation index keeps its data there).

    ``beneath``: a read-only store read when this one has no entry for a key (this store wins): ``None`` (the
    default) for the reference pack shipped with the package (:mod:`blocklens.store.pack`; none when it is
    absent or ``$BLOCKLENS_PACK=0``), another :class:`IconStore`, or ``False`` for none. ``get`` marks where each
    icon came from (:attr:`Icon.source`); ``put`` writes only here. ``read_only=True``: ``put`` refuses, and a
    corrupt entry is reported but left in place.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, storage_options: dict | None = None,
                 fs: Any = None, write_mode: str | None = None, beneath: "IconStore | bool | None" = None,
                 read_only: bool = False):
        self.storage_options: dict = dict(storage_options or {})
        #: The store's files: ``read``, ``read_json``, ``write`` (atomic), ``remove``, ``walk`` by '/'-separated
        #: paths under the root (see :class:`~blocklens.store.StoreFiles`).
        self.files = StoreFiles.open(root, storage_options=self.storage_options, fs=fs, write_mode=write_mode)
        self.read_only = bool(read_only)
        if beneath is None:
            beneath = bundled_pack()
        #: The read-only layer beneath this store (the reference pack by default), or None.
        self.beneath: IconStore | None = beneath or None
        self.source = "store"

    def __repr__(self) -> str:
        return f"IconStore({str(self.root)!r})"

    # --------------------------------------------------------------------------------------- where

    @property
    def root(self) -> Any:
        """The store's root: a Path for a local directory, the URL string otherwise."""
        return self.files.root

    @property
    def write_mode(self) -> str:
        """How files are written: ``"local"``, ``"pipe"`` or ``"rename"`` (see the class)."""
        return self.files.write_mode

    @property
    def url(self) -> str:
        """The store as a string: the directory path, or the fsspec URL. ``IconStore(store.url)`` reopens it."""
        return str(self.root)

    @property
    def is_local(self) -> bool:
        """True for a local directory (written with fsync + atomic rename)."""
        return self.files.local

    @property
    def shared(self) -> bool:
        """Whether other processes see this store (False for ``memory://``, which lives in one process)."""
        return self.files.local or "memory" not in protocols(self.fs)

    @property
    def fs(self):
        """The fsspec file system (a ``LocalFileSystem`` for a local directory)."""
        return self.files.fs

    @property
    def icons_dir(self) -> Any:
        """``<root>/icons``: where the entries live (a Path, or a URL string for fsspec stores)."""
        return self.files.where(ICONS_DIR)

    @property
    def corrupt_dir(self) -> Any:
        """``<root>/icons/corrupt``: where corrupt entries are moved aside."""
        return self.files.where(CORRUPT_DIR)

    def path_for(self, key: str) -> Any:
        """The entry file of ``key``: ``<root>/icons/<key[:2]>/<key>.png`` (it may not exist); a Path for a
        local store, a URL string otherwise."""
        return self.files.where(entry_rel(check_key(key)))

    # ---------------------------------------------------------------------------------------- reading

    def _load(self, key: str, quarantine: bool = True) -> tuple[Icon | None, str | None]:
        """(icon, None) if valid, (None, None) if missing, (None, reason) if corrupt (moved aside if asked;
        the reason then ends with what was done with the file)."""
        rel = entry_rel(key)
        reason = None
        for _ in range(3):  # retried only when a concurrent put replaced the file while we read it
            try:
                got = self.files.read_stamped(rel, MAX_ENTRY_BYTES)
            except IsADirectoryError:
                return None, "entry path is a directory"
            except NotADirectoryError:
                return None, "a folder on the entry's path is a file"
            if got is None:
                return None, None
            if got.data is None:
                reason = f"file is {got.size} bytes, larger than the {MAX_ENTRY_BYTES} allowed"
            else:
                try:
                    return decode_entry(got.data, key), None
                except CorruptEntry as e:
                    reason = str(e)
            if not quarantine:
                return None, reason
            done = self._quarantine(rel, key, got.stamp)
            if done is not None:
                return None, f"{reason}; {done}"
        return None, f"{reason}; left in place: it changed each time it was read"

    def _quarantine(self, rel: str, key: str, stamp: Any) -> str | None:
        """Move a corrupt entry aside (or delete it) and say what happened; None if the file changed since
        it was read (a concurrent put replaced it: read it again). Object stores have no compare-and-move:
        a put landing between the check and the move is moved aside too, and rendered again by the next reader."""
        try:
            if self.files.stamp(rel) != stamp:
                return None
        except FileNotFoundError:
            return "already removed by another reader"
        target = corrupt_rel(key)
        try:
            self.files.move(rel, target)
            return f"moved aside to {self.files.where(target)}"
        except FileNotFoundError:
            return "already removed by another reader"
        except Exception:
            pass
        try:
            if not self.files.remove(rel):
                return "already removed by another reader"
            return "deleted (it could not be moved aside)"
        except Exception as e:  # read-only store: put() will still replace it
            return f"left in place: it could not be moved or deleted ({e})"

    def get(self, key: str) -> Icon | None:
        """The icon stored under ``key``, verified; ``None`` if there is none.

        A corrupt entry (truncated, not a PNG, metadata unreadable, wrong key, checksum mismatch) is moved
        to ``icons/corrupt/``, a :class:`CorruptIconWarning` naming the key and the reason is emitted, and
        ``None`` is returned so the caller re-renders it.
        """
        icon, reason = self._load(check_key(key), quarantine=not self.read_only)
        if reason is not None:
            warnings.warn(f"icon {key} in {self.icons_dir} is corrupt: {reason}. Returning None so that it is "
                          "re-rendered.", CorruptIconWarning, stacklevel=2)
        if icon is not None:
            icon.source = self.source
            return icon
        if self.beneath is not None:  # missing here (or found corrupt and moved aside): the layer beneath
            return self.beneath.get(key)
        return None

    def __contains__(self, key: object) -> bool:
        """Whether a *valid* entry exists: a full verification, same as ``get(key) is not None``
        (a corrupt entry is moved aside with a warning). Use :meth:`exists` for a cheap check."""
        if not isinstance(key, str) or not KEY_RE.match(key):
            return False
        return self.get(key) is not None

    def exists(self, key: str) -> bool:
        """Cheap check: whether an entry file exists for ``key`` here or beneath, without reading or verifying it."""
        return self.files.isfile(entry_rel(check_key(key))) or (self.beneath is not None and self.beneath.exists(key))

    def keys(self) -> Iterator[str]:
        """Keys of the entry files present in this store (sorted; not verified; the layer beneath is not
        listed). Temp files and ``corrupt/`` are ignored."""
        yield from sorted(k for f in self.files.walk(ICONS_DIR) if (k := entry_key(f.rel)) is not None)

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def __len__(self) -> int:
        """Number of entry files present (not verified; see :meth:`verify`)."""
        return sum(1 for _ in self.keys())

    def verify(self, quarantine: bool = True, progress: bool = False, beneath: bool = False) -> dict:
        """Check every entry: ``{"ok": n, "corrupt": [keys]}``. Corrupt entries are moved aside to
        ``icons/corrupt/`` unless ``quarantine=False`` (or the store is read-only); no warnings are emitted.
        ``progress``: a bar on stderr. ``beneath=True``: the layer beneath (the reference pack) is checked too,
        its report under ``"beneath"`` (read-only: nothing there is moved)."""
        report = self._verify(quarantine and not self.read_only, progress)
        if beneath and self.beneath is not None:
            report["beneath"] = {"store": self.beneath.url, **self.beneath._verify(False, progress)}
        return report

    def _verify(self, quarantine: bool, progress: bool) -> dict:
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
        key = check_key(key)
        if self.read_only:
            raise InvalidIconError(f"store {self.url} is read-only (the reference pack, or opened read_only=True); "
                                   f"put icon {key[:12]}… into a user store instead")
        pixels = to_pixels(image)
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise InvalidIconError(f"meta must be a dict or None, got {type(meta).__name__}")
        full_meta = dict(meta)
        full_meta["key"] = key
        full_meta["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.files.write(entry_rel(key), encode_entry(key, pixels, full_meta))
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
        now = time.time()
        stale = [f for f in self.files.walk(ICONS_DIR) if _is_entry_temp(f.rel)] + stale_sprite_files(self.files)
        return sum(1 for f in stale if f.older_than(max_age_s, now) and self.files.remove(f.rel))

    # ------------------------------------------------------------------------------------------ info

    def info(self) -> dict:
        """What the store holds, from a listing (nothing is decoded): entry count and bytes, temporary and
        quarantined files, and a summary of every sprite sheet."""
        entries = size = temp = corrupt = sprite_bytes = 0
        for f in self.files.walk(""):
            top, name = f.rel.split("/", 1)[0], f.rel.rsplit("/", 1)[-1]
            if entry_key(f.rel) is not None:
                entries += 1
                size += f.size
            elif _is_entry_temp(f.rel):
                temp += 1
            elif f.rel.startswith(CORRUPT_DIR + "/"):
                corrupt += 1
            elif top == SPRITES_DIR:
                if name.startswith(TEMP_PREFIX):
                    temp += 1
                else:
                    sprite_bytes += f.size
        sheets = [{k: s.get(k) for k in ("model", "fingerprint", "layer", "unit_kind", "recipe_hash", "count",
                                         "total", "complete", "icon_size", "image")}
                  | {"size": (s.get("recipe") or {}).get("size"), "steps": (s.get("recipe") or {}).get("steps")}
                  for s in self.sprites()]
        backend = "local" if self.is_local else "+".join(protocols(self.fs))
        out = {"store": self.url, "backend": backend, "write_mode": self.write_mode, "entries": entries,
               "entry_bytes": size, "temp_files": temp, "corrupt_files": corrupt, "sprite_bytes": sprite_bytes,
               "sprites": sheets}
        if self.beneath is not None:
            out["beneath"] = {"store": self.beneath.url, "entries": len(self.beneath),
                              "manifest": pack_manifest(self.beneath.root) if self.beneath.is_local else None}
        return out


_PACK: dict[str, "IconStore | None"] = {}


def bundled_pack() -> IconStore | None:
    """The reference pack shipped with the package as a read-only store (one instance per process), or None
    when the package has none or ``$BLOCKLENS_PACK=0`` (see :mod:`blocklens.store.pack`)."""
    if not pack_enabled() or pack_manifest(PACK_DIR) is None:
        return None
    if "pack" not in _PACK:
        pack = IconStore(PACK_DIR, beneath=False, read_only=True)
        pack.source = "pack"
        _PACK["pack"] = pack
    return _PACK["pack"]
