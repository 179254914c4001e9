"""Building the reference pack: the verified entries of a store rendered by precompute, copied with a manifest.

``python -m blocklens.store.packbuild BUILD_STORE`` (a maintainer's tool) replaces ``blocklens/data/pack/icons``
with the entries of ``BUILD_STORE`` (sprite sheets left out: the pack is read one icon at a time) and writes
``manifest.json`` (see :mod:`blocklens.store.pack`).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ..version import __version__
from .entries import ICONS_DIR, entry_rel
from .iconstore import IconStore
from .keys import RECIPE_VERSION
from .pack import MANIFEST, PACK_DIR


def build_pack(source, folder: Path = PACK_DIR, *, note: str = "") -> dict:
    """Copy every valid entry of the store ``source`` (a folder or an IconStore) into ``folder`` and write its
    manifest; returns the manifest. Entries must share one model fingerprint and one recipe."""
    src = source if isinstance(source, IconStore) else IconStore(source, beneath=False)
    folder = Path(folder)
    if (folder / ICONS_DIR).exists():
        shutil.rmtree(folder / ICONS_DIR)
    fingerprints, recipes, layers, models = set(), set(), {}, set()
    count = size = 0
    for key in src.keys():
        icon = src.get(key)
        if icon is None:
            continue
        meta = icon.meta
        fingerprints.add(meta.get("fingerprint"))
        models.add(meta.get("model"))
        recipes.add(json.dumps(meta.get("recipe"), sort_keys=True))
        layers[meta.get("layer")] = layers.get(meta.get("layer"), 0) + 1
        data = src.files.read(entry_rel(key))
        dest = folder / entry_rel(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        count += 1
        size += len(data)
    if len(fingerprints) != 1 or len(recipes) != 1:
        raise ValueError(f"a pack holds one model and one recipe; {source} has fingerprints {sorted(map(str, fingerprints))} "
                         f"and {len(recipes)} recipes")
    manifest = {"format": 1, "model": models.pop(), "fingerprint": fingerprints.pop(), "layers": layers,
                "preset": "default", "recipe": json.loads(recipes.pop()), "recipe_version": RECIPE_VERSION,
                "blocklens": __version__, "icons": count, "bytes": size, "note": note}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return manifest



if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    if len(sys.argv) != 2:
        sys.exit("usage: python -m blocklens.store.packbuild BUILD_STORE")
    print(json.dumps(build_pack(sys.argv[1], note="blocklens precompute --layers blocks.7 blocks.11 --preset default"),
                     indent=1))
