"""A store's files: one fsspec file system (a LocalFileSystem for a local folder), checked paths, atomic writes."""
from __future__ import annotations

import datetime as _dt
import json
import os
import posixpath
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .errors import InvalidIconError

#: Prefix of temporary files written by atomic writes.
TEMP_PREFIX = ".tmp-"
#: fsspec protocols that write whole objects, visible only once complete: writes go to the final name directly.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2", "memory"})

_VALID_REL = ("a relative path of '/'-separated names under the store's root, e.g. 'index/<key>/manifest.json' "
              "(no leading '/', no empty, '.' or '..' names, none of \\ : * ? [ or NUL)")


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


def is_url(root: Any) -> bool:
    """Whether a store root is an fsspec URL (``memory://x``, ``s3://...``, a chained ``a::b``) rather than a path."""
    return isinstance(root, str) and ("://" in root or "::" in root)


def protocols(fs) -> tuple[str, ...]:
    """The protocol names of an fsspec file system."""
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def check_rel(rel: Any) -> str:
    """``rel`` if it is a safe path under a store's root, else :class:`InvalidIconError` naming it and why."""
    if not isinstance(rel, str):
        raise InvalidIconError(f"store file path must be a str, got {type(rel).__name__} {rel!r}; "
                               f"expected {_VALID_REL}")
    names = rel.split("/")
    why = ("it is empty" if not rel else "it is absolute" if rel.startswith("/")
           else "it has a '..' name" if ".." in names else "it has a '.' name" if "." in names
           else "it has an empty name ('//' or a trailing '/')" if "" in names
           else next((f"it contains {c!r}" for c in "\\:*?[\0" if c in rel), None))
    if why is not None:
        raise InvalidIconError(f"invalid store file path {rel!r}: {why}; expected {_VALID_REL}")
    return rel


class FileInfo(NamedTuple):
    """A file under a store's root: its '/'-separated path there, its size, its modification time (or None)."""

    rel: str
    size: int
    mtime: float | None

    def older_than(self, max_age_s: float, now: float) -> bool:
        """Whether it is older than ``max_age_s`` (always when ``max_age_s <= 0``; never when its mtime is unknown)."""
        return max_age_s <= 0 or (self.mtime is not None and self.mtime < now - max_age_s)


class Stamped(NamedTuple):
    """A file as read by :meth:`StoreFiles.read_stamped`."""

    data: bytes | None  # None when the file is larger than asked
    size: int
    stamp: Any  # what StoreFiles.stamp() returns while the file is still this one


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


def _stat_id(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _fsync_dir(path: str) -> None:
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


class StoreFiles:
    """The files under a store's root, by '/'-separated relative paths (checked: none can leave the root).

    ``write_mode`` says how :meth:`write` makes a file appear whole: ``"local"`` (a local folder: a temporary
    file in the same directory, flushed and fsynced, ``os.replace``-d onto the final name, the directory
    fsynced), ``"pipe"`` (one whole-object write, for object stores) or ``"rename"`` (a temporary name, then
    ``fs.mv``). Reads, listings and removals go through ``fs`` whatever the mode.
    """

    def __init__(self, fs, base: str, root: Any, write_mode: str):
        self.fs = fs  #: the fsspec file system
        self.base = base  #: the root's path on ``fs``
        self.root = root  #: a Path for a local folder, else the URL
        self.write_mode = write_mode

    @classmethod
    def open(cls, root: str | os.PathLike | None = None, *, storage_options: dict | None = None, fs: Any = None,
             write_mode: str | None = None) -> StoreFiles:
        """The files of a store root: a folder (``None``: :func:`default_root`), an fsspec URL, or a path on
        ``fs``; see :class:`~blocklens.store.IconStore` for the arguments."""
        from fsspec.implementations.local import LocalFileSystem

        if fs is not None:
            if root is None or not str(root).strip():
                raise InvalidIconError("with fs=, root must be the store's path on that file system")
            base = fs._strip_protocol(str(root)).rstrip("/")
            return cls(fs, base, fs.unstrip_protocol(base), cls._remote_mode(fs, write_mode))
        if isinstance(root, str) and not root.strip():
            raise InvalidIconError("root must be a directory path or an fsspec URL, got an empty string")
        if is_url(root):
            import fsspec

            try:
                url_fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
            except ImportError as e:
                raise InvalidIconError(f"store {root!r} needs a file system package that is not installed "
                                       f"({e}): pip install 'blocklens[s3]' (s3fs) for s3://, 'blocklens[gcs]' "
                                       "(gcsfs) for gs://, 'blocklens[azure]' (adlfs) for az://") from None
            except ValueError as e:
                raise InvalidIconError(f"store {root!r} is not a URL fsspec knows: {e}") from None
            if not isinstance(url_fs, LocalFileSystem) or "::" in root:
                return cls(url_fs, path.rstrip("/"), root.rstrip("/"), cls._remote_mode(url_fs, write_mode))
            root = path
        if write_mode not in (None, "local"):
            raise InvalidIconError(f"write_mode={write_mode!r} applies to fsspec stores only; a local directory "
                                   "always writes a fsynced temporary file and renames it")
        folder = default_root() if root is None else Path(root).expanduser()
        local = LocalFileSystem()
        return cls(local, local._strip_protocol(str(folder)), folder, "local")

    @staticmethod
    def _remote_mode(fs, write_mode: str | None) -> str:
        if write_mode not in (None, "pipe", "rename"):
            raise InvalidIconError(f"write_mode must be 'pipe' or 'rename', got {write_mode!r}")
        return write_mode or ("pipe" if set(protocols(fs)) & OBJECT_STORE_PROTOCOLS else "rename")

    @property
    def local(self) -> bool:
        """True for a local folder (written with fsync + atomic rename)."""
        return self.write_mode == "local"

    # ------------------------------------------------------------------------------------------- names

    def path(self, rel: str) -> str:
        """The path on :attr:`fs` of ``rel`` (checked with :func:`check_rel`)."""
        rel = check_rel(rel)
        return posixpath.join(self.base, rel) if self.base else rel

    def where(self, rel: str = "") -> Any:
        """What to show for ``rel``: a Path for a local folder, else a URL string; ``""``: the root."""
        if rel:
            check_rel(rel)
        if isinstance(self.root, Path):
            return self.root / rel if rel else self.root
        return f"{self.root}/{rel}" if rel else self.root

    def _rel(self, path: str) -> str | None:
        """The inverse of :meth:`path`: ``path``'s rel under the root, or None if it is not below the root."""
        if not self.base:
            return path.lstrip("/")
        prefix = self.base if self.base.endswith("/") else self.base + "/"
        return path[len(prefix):] if path.startswith(prefix) else None

    # ------------------------------------------------------------------------------------------ reading

    def read(self, rel: str) -> bytes | None:
        """Bytes of the file at ``rel``, or None if there is none."""
        try:
            return self.fs.cat_file(self.path(rel))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def read_json(self, rel: str) -> dict | None:
        """The JSON object in the file at ``rel``; None if there is none or it is not a JSON object."""
        data = self.read(rel)
        if data is None:
            return None
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def read_stamped(self, rel: str, max_bytes: int) -> Stamped | None:
        """The file at ``rel`` (its bytes unless larger than ``max_bytes``) with its stamp; None if there is none.

        The stamp tells whether the file is still the one read (see :meth:`stamp`): device, inode, size and
        mtime (ns) of the very file read on a local folder; its bytes elsewhere. A directory at ``rel``
        raises IsADirectoryError (or NotADirectoryError where a parent is a file).
        """
        path = self.path(rel)
        try:
            if self.local:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    return Stamped(f.read() if st.st_size <= max_bytes else None, st.st_size, _stat_id(st))
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        return Stamped(data if len(data) <= max_bytes else None, len(data), data)

    def stamp(self, rel: str) -> Any:
        """The file's stamp now (see :meth:`read_stamped`); FileNotFoundError if it is gone."""
        path = self.path(rel)
        return _stat_id(os.stat(path)) if self.local else self.fs.cat_file(path)

    def isfile(self, rel: str) -> bool:
        """Whether a file exists at ``rel`` (without reading it)."""
        return bool(self.fs.isfile(self.path(rel)))

    def walk(self, rel_dir: str = "") -> Iterator[FileInfo]:
        """Every file under ``rel_dir`` (``""``: the whole root), unsorted; nothing if it does not exist."""
        top = self.path(rel_dir) if rel_dir else self.base
        for path, size, mtime in self._list(top):
            rel = self._rel(path)
            if rel:
                yield FileInfo(rel, size, mtime)

    def _list(self, top: str) -> Iterator[tuple[str, int, float | None]]:
        """(path, size, mtime) of every file below ``top``. A local folder is listed with os.walk, which skips
        a file renamed away between the listing and its stat (fsspec's LocalFileSystem.ls drops the whole
        directory then, in the fsspec versions this package supports)."""
        if self.local:
            for dirpath, _, names in os.walk(top):
                for name in names:
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.stat(path)
                    except FileNotFoundError:
                        continue
                    yield path.replace(os.sep, "/"), st.st_size, st.st_mtime
            return
        try:
            found = self.fs.find(top, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return
        for path, info in found.items():
            if info.get("type", "file") == "file":
                yield self.fs._strip_protocol(path), int(info.get("size") or 0), _mtime(info)

    # ------------------------------------------------------------------------------------------ writing

    def write(self, rel: str, data: bytes) -> None:
        """Write a whole file so that readers see the old one or the new one, never a part (see the class);
        on failure the temporary file is removed and the old file (if any) is untouched."""
        path = self.path(rel)
        if self.write_mode == "pipe":
            self.fs.pipe_file(path, data)
            return
        parent, name = posixpath.split(path)
        tmp = posixpath.join(parent, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{posixpath.splitext(name)[1]}")
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        try:
            self._write_temp(tmp, data)
            self._rename(tmp, path)
        except BaseException:
            try:
                self.fs.rm(tmp)
            except Exception:
                pass
            raise

    def _write_temp(self, tmp: str, data: bytes) -> None:
        if not self.local:
            self.fs.pipe_file(tmp, data)
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _rename(self, src: str, dst: str) -> None:
        if not self.local:
            self.fs.mv(src, dst)
            return
        os.replace(src, dst)  # atomic on POSIX and Windows
        _fsync_dir(posixpath.dirname(dst))

    def move(self, rel: str, to_rel: str) -> None:
        """Rename the file at ``rel`` to ``to_rel`` (creating its folder); FileNotFoundError if it is gone."""
        src, dst = self.path(rel), self.path(to_rel)
        if self.write_mode != "pipe":  # object stores have no folders to make
            self.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
        self._rename(src, dst)

    def remove(self, rel: str) -> bool:
        """Remove the file at ``rel``; False if there was none."""
        try:
            self.fs.rm(self.path(rel))
            return True
        except FileNotFoundError:
            return False
