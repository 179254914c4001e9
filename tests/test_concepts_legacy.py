"""A class-concepts run written before the job engine (tests/data/legacy_concepts, see make_legacy_concepts.py) is
found by the same request with the current code: its scan shards are read, not recomputed, and so are its measure
shards when the factorization gives the same components; the result is the one the earlier code returned."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from blocklens.dataset import concepts as concepts_mod
from blocklens.dataset.concepts import class_concepts
from blocklens.images import BUNDLED_DIR
from blocklens.store import IconStore

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "legacy_concepts.json").read_text())
REQUEST = dict(cls="malamute", layer="blocks.11", k=2, positions=8, chunk=3, examples=4, icons=False)


def test_a_legacy_concepts_run_is_found_and_gives_the_same_concepts(tmp_path, monkeypatch):
    shutil.copytree(DATA / "legacy_concepts", tmp_path / "store")
    store = IconStore(tmp_path / "store")
    measured = []
    measure_chunk = concepts_mod.phases.measure_chunk
    monkeypatch.setattr(concepts_mod.phases, "scan_chunk", lambda *a, **k: pytest.fail("a finished scan was redone"))
    monkeypatch.setattr(concepts_mod.phases, "measure_chunk", lambda *a, **k: measured.append(1) or measure_chunk(*a, **k))
    r = class_concepts("efficientnet_lite0", BUNDLED_DIR, store=store, progress=False, **REQUEST)
    assert r.options["key"] == EXPECTED["key"]
    assert (r.cls, r.layer, r.images, r.k, r.labels_from) == (EXPECTED["class"], EXPECTED["layer"], EXPECTED["images"],
                                                             EXPECTED["k"], EXPECTED["labels_from"])
    assert r.others == EXPECTED["others"] and r.sample["rows"] == EXPECTED["sample"]["rows"]
    # the measure shards are keyed by the fitted components' bytes: found whenever this CPU fits the same ones
    ids = np.arange(6, dtype=np.int64)  # every readable photograph is measured (the class's and the others')
    mkey = hashlib.sha256(r.options["key"].encode() + r.components.astype(np.float32).tobytes()
                          + ids.tobytes()).hexdigest()[:16]
    if (DATA / "legacy_concepts" / "concepts" / r.options["key"] / mkey).is_dir():  # true on the CPU that wrote it
        assert measured == [], "finished measure shards were redone"
    for got, want in zip(r.concepts, EXPECTED["concepts"]):
        assert (got.index, got.flipped, got.predicted) == (want["index"], want["flipped"], want["predicted"])
        assert [list(e.box) for e in got.examples] == want["boxes"] and [e.path for e in got.examples] == want["paths"]
        for name in ("importance", "logprob_drop", "coverage"):
            assert getattr(got, name) == pytest.approx(want[name], rel=1e-3, abs=1e-4), name
        d = np.asarray(want["direction"])
        np.testing.assert_allclose(got.direction, d, rtol=1e-3, atol=1e-3 * np.abs(d).max())
