"""Sprite sheets: one PNG of a layer's icons per recipe, with its JSON index, under ``<root>/sprites/``."""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import re
import warnings
from typing import Any

import numpy as np
from PIL import Image

from .entries import ImageInput, png_bytes, to_pixels
from .errors import CorruptIconWarning, InvalidIconError
from .files import TEMP_PREFIX, FileInfo, StoreFiles
from .keys import RECIPE_VERSION, layer_slug, recipe_hash

#: Folder (under the root) of the sprite sheets.
SPRITES_DIR = "sprites"
#: Version of the sprite index format (the ``format`` field of its JSON).
SPRITE_FORMAT = 1

_RECIPE_HASH_RE = re.compile(r"^[0-9a-f]{16}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SPRITE_PNG_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.png$")


def _sprite_dir(fingerprint: str, layer: str, recipe: dict | str) -> tuple[str, str]:
    """(folder, recipe hash) of a sprite sheet."""
    if not isinstance(fingerprint, str) or not _NAME_RE.match(fingerprint) or set(fingerprint) <= {"."}:
        raise InvalidIconError(f"invalid model fingerprint {fingerprint!r}: expected 1 to 128 of A-Z a-z 0-9 _ . - "
                               "(not only dots)")
    rh = recipe if isinstance(recipe, str) else recipe_hash(recipe)
    if not _RECIPE_HASH_RE.match(rh):
        raise InvalidIconError(f"invalid recipe hash {rh!r}: expected 16 lowercase hex (see recipe_hash())")
    return f"{SPRITES_DIR}/{fingerprint}/{layer_slug(layer)}", rh


def _finite(x: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (JSON has no NaN)."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def stale_sprite_files(files: StoreFiles) -> list[FileInfo]:
    """Files under ``sprites/`` that no reader uses: temporary files, and sheets that no index names (left when
    two runs rewrote a sheet at once)."""
    found = list(files.walk(SPRITES_DIR))
    named = set()
    for f in found:
        d, name = f.rel.rsplit("/", 1)
        if name.endswith(".json") and not name.startswith(TEMP_PREFIX):
            index = files.read_json(f.rel)
            if index and isinstance(index.get("image"), str):
                named.add(f"{d}/{index['image']}")
    return [f for f in found if (name := f.rel.rsplit("/", 1)[1]).startswith(TEMP_PREFIX)
            or (_SPRITE_PNG_RE.match(name) and f.rel not in named)]


class SpriteSheets:
    """The sprite sheets of a store (a mixin of :class:`~blocklens.store.IconStore`, which gives ``files`` and
    ``url``)."""

    files: StoreFiles
    url: str

    def sprite_url(self, fingerprint: str, layer: str, recipe: dict | str) -> str:
        """Where the index of a layer's sprite sheet for ``recipe`` (a dict, or its :func:`recipe_hash`) is or
        would be: the URL (or path) that :meth:`put_sprite` returns."""
        d, rh = _sprite_dir(fingerprint, layer, recipe)
        return str(self.files.where(f"{d}/{rh}.json"))

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
        d, rh = _sprite_dir(fingerprint, layer, recipe)
        if not isinstance(index, dict):
            raise InvalidIconError(f"index must be a dict, got {type(index).__name__}")
        pixels = to_pixels(image)
        data = png_bytes(pixels)
        sha = hashlib.sha256(data).hexdigest()
        name = f"{rh}-{sha[:16]}.png"
        full = _finite(dict(index))
        full.update(format=SPRITE_FORMAT, fingerprint=fingerprint, layer=layer, recipe=recipe, recipe_hash=rh,
                    recipe_version=RECIPE_VERSION, image=name, png_sha256=sha, width=int(pixels.shape[1]),
                    height=int(pixels.shape[0]),
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        text = json.dumps(full, indent=1, sort_keys=True, allow_nan=False)
        previous = self.files.read_json(f"{d}/{rh}.json")
        self.files.write(f"{d}/{name}", data)
        self.files.write(f"{d}/{rh}.json", text.encode("utf-8"))
        old = previous.get("image") if previous else None
        if isinstance(old, str) and old != name and _SPRITE_PNG_RE.match(old):
            try:
                self.files.remove(f"{d}/{old}")
            except Exception:  # best effort; clean_temp() removes it later
                pass
        return self.sprite_url(fingerprint, layer, rh)

    def sprite_index(self, fingerprint: str, layer: str, recipe: dict | str) -> dict | None:
        """The index of a layer's sprite sheet for ``recipe`` (a dict, or its :func:`recipe_hash`), or None."""
        d, rh = _sprite_dir(fingerprint, layer, recipe)
        index = self.files.read_json(f"{d}/{rh}.json")
        if index is None or index.get("layer") != layer or index.get("fingerprint") != fingerprint:
            return None
        return index

    def sprite_bytes(self, fingerprint: str, layer: str, recipe: dict | str) -> tuple[bytes, dict] | None:
        """``(PNG bytes, index)`` of a layer's sprite sheet, checked against the index's sha256; None if the
        store has none (or only a damaged one: a :class:`CorruptIconWarning` says so). For serving as is."""
        d, _ = _sprite_dir(fingerprint, layer, recipe)
        reason = "missing"
        for _ in range(3):  # retried when a concurrent writer replaced the sheet between the two reads
            index = self.sprite_index(fingerprint, layer, recipe)
            if index is None:
                return None
            name = index.get("image")
            if not isinstance(name, str) or not _SPRITE_PNG_RE.match(name):
                reason = f"index names no valid sheet ({name!r})"
                break
            data = self.files.read(f"{d}/{name}")
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
        for f in self.files.walk(SPRITES_DIR):
            parts = f.rel.split("/")
            if len(parts) != 4 or not parts[3].endswith(".json") or parts[3].startswith(TEMP_PREFIX):
                continue
            if fingerprint is not None and parts[1] != fingerprint:
                continue
            index = self.files.read_json(f.rel)
            if not index or (layer is not None and index.get("layer") != layer):
                continue
            out.append(index)
        return sorted(out, key=lambda i: (str(i.get("fingerprint")), str(i.get("layer")), str(i.get("recipe_hash"))))
