"""The reference pack: icons shipped with the package, a read-only store layer read beneath every user store.

``blocklens/data/pack/`` is an icon store folder (the same layout, the same verified entries) holding every
channel of the embedded model's default layers rendered at the reference ("default") preset by ``blocklens
precompute``, and ``manifest.json``: which model (its weight fingerprint), layers, preset, recipe, recipe
version and blocklens version made it, how many icons and bytes. :class:`~blocklens.store.IconStore` reads an
entry from its own folder first and from the pack only when it has none (the user's store wins); it never
writes to, quarantines or cleans the pack. ``BLOCKLENS_PACK=0`` switches the layer off (benchmarks of cold
renders do).

:mod:`blocklens.store.packbuild` makes the pack from a store rendered by precompute.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .entries import ICONS_DIR, entry_key

#: Where the package keeps its pack (absent in a checkout that has not built one).
PACK_DIR = Path(__file__).resolve().parent.parent / "data" / "pack"
MANIFEST = "manifest.json"


def pack_enabled() -> bool:
    """Whether the pack is read beneath user stores (``$BLOCKLENS_PACK`` is not ``0``/``false``/``no``/``off``)."""
    return os.environ.get("BLOCKLENS_PACK", "1").strip().lower() not in ("0", "false", "no", "off")


def pack_manifest(folder: Path | None = None) -> dict | None:
    """The pack's manifest, or None when there is no pack (or it is switched off and ``folder`` is not given)."""
    if folder is None:
        if not pack_enabled():
            return None
        folder = PACK_DIR
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pack_keys(folder: Path = PACK_DIR) -> list[str]:
    """The entry keys the pack folder holds (not verified)."""
    root = Path(folder) / ICONS_DIR
    if not root.is_dir():
        return []
    return sorted(k for p in root.glob("*/*.png") if (k := entry_key(f"{ICONS_DIR}/{p.parent.name}/{p.name}")))
