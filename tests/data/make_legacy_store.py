"""Writes tests/data/legacy_store/ (a small icon store in today's on-disk format) and legacy_store.json (what it holds).

Run once, from the repository root, with the store code whose format the fixture pins:
``python tests/data/make_legacy_store.py``. tests/test_store_legacy.py opens a copy of the folder with the current
code; if the format changes on purpose, that test says so, and this script is run again with the new code.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from blocklens.store import IconStore, icon_key, recipe_hash

HERE = Path(__file__).resolve().parent
ROOT = HERE / "legacy_store"
FINGERPRINT = "1e9acfd0000c0ffe"
LAYER = "blocks.3"
RECIPE = {"size": 8, "steps": 4, "lr": 0.05, "seed": 0, "param": "fft"}
#: (unit, seed, shape) of each icon; one RGBA among RGB ones.
ICONS = [("channel:0", 0, (8, 8, 3)), ("channel:1", 1, (8, 8, 3)), ("channel:2", 2, (12, 12, 3)),
         ("neuron:3@1,2", 3, (8, 8, 4))]
TEMP = ".tmp-4242-0123456789abcdef.png"  # a write a crash cut short


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    store = IconStore(ROOT)
    icons = []
    for unit, seed, shape in ICONS:
        key = icon_key(FINGERPRINT, LAYER, unit, RECIPE)
        pixels = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
        store.put(key, pixels, {"layer": LAYER, "unit": unit, "recipe": RECIPE, "loss": -1.25 * seed})
        icons.append({"key": key, "pixels": pixels.tolist(), "meta": store.get(key).meta})
    sheet = np.concatenate([np.asarray(i["pixels"], np.uint8)[:, :, :3] for i in icons[:2]], axis=1)  # 8 x 16
    units = [{"index": n, "key": i["key"], "unit": i["meta"]["unit"], "row": 0, "col": n, "x": 8 * n, "y": 0}
             for n, i in enumerate(icons[:2])]
    store.put_sprite(FINGERPRINT, LAYER, RECIPE, sheet, {"model": "legacy", "columns": 2, "rows": 1,
                                                          "icon_size": [8, 8], "units": units})
    temp = store.path_for(icons[0]["key"]).parent / TEMP
    temp.write_bytes(b"\x89PNG\r\n\x1a\n half-written")
    expected = {"fingerprint": FINGERPRINT, "layer": LAYER, "recipe": RECIPE, "recipe_hash": recipe_hash(RECIPE),
                "icons": icons, "temp": temp.relative_to(ROOT).as_posix(), "sheet": sheet.tolist(),
                "sprite_index": store.sprite_index(FINGERPRINT, LAYER, RECIPE)}
    (HERE / "legacy_store.json").write_text(json.dumps(expected, indent=None, sort_keys=True) + "\n")
    print(f"wrote {ROOT} ({sum(p.stat().st_size for p in ROOT.rglob('*') if p.is_file())} bytes)")


if __name__ == "__main__":
    main()
