"""Folders of images: which files a folder holds, what its content is (digests, keys), and its ImageFolder labels.

Every folder job (the index, class concepts) lists, keys and labels a folder here, the same way:
:func:`folder_images` (sorted relative paths, hidden files left out), :func:`folder_digests` / :func:`folder_key`
(sha256 over each file's relative path and content, so a changed file makes a new key), :func:`json_key` (the short
hash of a canonical JSON that index and concepts keys are made of) and :func:`folder_labels` (a class per image from
its first-level subfolder, the ImageFolder convention).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BlocklensError

__all__ = ["IMAGE_EXTENSIONS", "folder_images", "folder_digests", "folder_key", "folder_labels", "json_key",
           "is_key"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def json_key(value: Any, compact: bool = True) -> str:
    """sha256 (16 hex characters) of ``value`` as JSON with sorted keys (``compact``: no spaces after separators)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":") if compact else None)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_key(text: str) -> bool:
    """True for 16 lower-case hex characters (an index's or a run's key) that are not a path here."""
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text) and not Path(text).exists()


def folder_images(folder: str | os.PathLike) -> tuple[list[str], int]:
    """Sorted relative paths (``/``-separated) of the files under ``folder`` with an image extension, and the
    number of other files (ignored). Hidden files and folders (``.name``) are left out."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise BlocklensError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise BlocklensError(f"{str(root)!r} is a file, not a folder of images")
    found, ignored = [], 0
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(rel)
            else:
                ignored += 1
    return sorted(found), ignored


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_digests(folder: str | os.PathLike, images: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """The folder's content key, sha256 (hex, 16 characters) over every image file's relative path and content
    sha256 in order, and those file digests."""
    root = Path(folder).expanduser()
    images = folder_images(root)[0] if images is None else images
    h = hashlib.sha256()
    digests = []
    for rel in images:
        try:
            digest = _file_sha(root / rel)
        except OSError as e:  # an unreadable file still keys the folder (its reason is recorded later)
            digest = f"unreadable:{type(e).__name__}"
        digests.append(digest)
        h.update(json.dumps([rel, digest]).encode())
    return h.hexdigest()[:16], digests


def folder_key(folder: str | os.PathLike, images: Sequence[str] | None = None) -> str:
    """sha256 (hex, 16 characters) over every image file's relative path and content sha256, in order."""
    return folder_digests(folder, images)[0]


def folder_labels(model, images: Sequence[str]) -> tuple[np.ndarray | None, str]:
    """Per image its class from its first-level subfolder (the ImageFolder convention: ``dog/1.jpg``), and how
    they were read; ``(None, why not)`` when some image is not in a subfolder or a subfolder is not a class name
    (then the model's predictions choose)."""
    tops = [p.split("/", 1)[0] if "/" in p else None for p in images]
    if not images or any(t is None for t in tops):
        return None, "predictions (the folder has images outside class subfolders)"
    mapping, unknown = {}, []
    for name in sorted(set(tops)):
        for candidate in (name, name.replace("_", " ")):
            try:
                mapping[name] = model.class_index(candidate)
                break
            except BlocklensError:
                continue
        else:
            unknown.append(name)
    if unknown:
        return None, f"predictions (subfolders {', '.join(unknown[:3])}{'...' if len(unknown) > 3 else ''} are not class names)"
    return np.asarray([mapping[t] for t in tops], np.int64), "folders"
