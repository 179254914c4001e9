"""Writes tests/data/legacy_concepts/ (a class-concepts run's shards, in a store of its own) and
tests/data/legacy_concepts.json (what that run returned).

Run once, from the repository root, with the code whose concepts format the fixture pins:
``python tests/data/make_legacy_concepts.py``. It was written by the code of 90cce80 (before the job engine);
tests/test_concepts_legacy.py reads a copy of it with the current code and checks that the same request over the
same photographs finds every shard (nothing is recomputed) and returns the same concepts.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from blocklens.dataset.concepts import class_concepts
from blocklens.images import BUNDLED_DIR

HERE = Path(__file__).resolve().parent
ROOT = HERE / "legacy_concepts"
REQUEST = dict(cls="malamute", layer="blocks.11", k=2, positions=8, chunk=3, examples=4, icons=False)


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    r = class_concepts("efficientnet_lite0", BUNDLED_DIR, store=str(ROOT), progress=False, **REQUEST)
    out = r.to_json(images=False)
    keep = {k: out[k] for k in ("model", "layer", "class", "images", "labels_from", "k", "sample", "others")}
    keep["key"] = r.options["key"]
    keep["concepts"] = [{k: c[k] for k in ("index", "importance", "logprob_drop", "flips", "flipped", "predicted",
                                          "coverage", "other_ratio", "direction")}
                        | {"boxes": [e["box"] for e in c["examples"]], "paths": [e["path"] for e in c["examples"]]}
                        for c in out["concepts"]]
    (HERE / "legacy_concepts.json").write_text(json.dumps(keep, indent=1, sort_keys=True))
    print(f"concepts run {keep['key']} with {len(keep['concepts'])} concepts in {ROOT}")


if __name__ == "__main__":
    main()
