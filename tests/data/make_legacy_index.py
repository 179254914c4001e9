"""Writes tests/data/legacy_index/: an activation index of the bundled photographs, in a store of its own.

Run once, from the repository root, with the code whose index format the fixture pins:
``python tests/data/make_legacy_index.py``. It was written by the code of 9cdc5fc (before the package was laid out
in floors); tests/test_store_legacy.py reads a copy of it with the current code and checks that the same options
over the same photographs still find it, and that a fresh build gives the same numbers.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import blocklens as bl
from blocklens.images import BUNDLED_DIR

ROOT = Path(__file__).resolve().parent / "legacy_index"
LAYERS = ["blocks.11"]
OPTIONS = dict(k=3, samples=1, seed=0, classes=2, chunk=4)


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    index = bl.build_index(BUNDLED_DIR, "efficientnet_lite0", LAYERS, store=str(ROOT), progress=False, **OPTIONS)
    print(f"index {index.key} of {index.count} photographs in {ROOT}")


if __name__ == "__main__":
    main()
