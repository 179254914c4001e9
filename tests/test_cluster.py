"""blocklens on a Ray cluster that loses a node. A head and two worker nodes are started on this machine with
``ray.cluster_utils.Cluster`` (each node its own raylet, object store and one CPU, as Ray's own tests do; the head
has no CPU, so every task runs on a worker node). Precompute, an index, class concepts and a concept dictionary run
through it and give what they give here; then a worker node is removed while an index runs, and the run still
finishes with the same index: Ray retries the lost tasks on the node that is left, the shards written before the loss are kept untouched,
and no shard is half written.

Marked ``cluster`` (17 s on an idle 2-core machine, up to two minutes beside other work): ``./dev test-cluster``; CI runs it after the default suite."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import blocklens as bl
from blocklens.dataset.concepts import class_concepts
from blocklens.dataset.dictionary import concept_dictionary
from blocklens.dataset.index import build_index
from blocklens.images import BUNDLED_DIR
from blocklens.jobs import npz_load
from blocklens.precompute import precompute
from blocklens.store import IconStore

pytestmark = pytest.mark.cluster
ray = pytest.importorskip("ray")
TINY = dict(size=32, steps=4)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


def alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"])


def same_index(a, b) -> None:
    assert a.key == b.key and a.images == b.images and a.skipped == b.skipped
    for layer in a.layers:
        x, y = a.layer(layer).arrays, b.layer(layer).arrays
        assert sorted(x) == sorted(y)
        for name, v in x.items():
            if v.dtype.kind in "iub":
                np.testing.assert_array_equal(y[name], v, err_msg=name)
            else:
                np.testing.assert_allclose(y[name], v, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(v).max())),
                                           err_msg=name)


def test_precompute_index_and_concepts_through_the_cluster_equal_the_local_runs(cluster, tmp_path):
    assert alive_nodes() == 3
    kw = dict(layers=["blocks.3"], units="0-3", batch=2, threads=1, progress=False, **TINY)
    here = precompute("efficientnet_lite0", store=tmp_path / "here", workers=0, **kw)
    there = precompute("efficientnet_lite0", store=tmp_path / "ray", ray="auto", **kw)
    assert (there["backend"], there["rendered"], there["failed"]) == ("ray", 4, 0), there["errors"]
    assert set(IconStore(tmp_path / "here").keys()) == set(IconStore(tmp_path / "ray").keys())
    assert here["recipe_hash"] == there["recipe_hash"]

    opts = dict(k=3, samples=1, classes=2, chunk=2, progress=False)
    local = build_index(BUNDLED_DIR, "efficientnet_lite0", ["blocks.7"], store=tmp_path / "i_here", **opts)
    remote = build_index(BUNDLED_DIR, "efficientnet_lite0", ["blocks.7"], store=tmp_path / "i_ray", ray="auto", **opts)
    same_index(local, remote)

    ckw = dict(layer="blocks.11", k=2, positions=8, chunk=3, examples=4, icons=False, progress=False)
    c_here = class_concepts("efficientnet_lite0", BUNDLED_DIR, "malamute", store=tmp_path / "c_here", **ckw)
    c_ray = class_concepts("efficientnet_lite0", BUNDLED_DIR, "malamute", store=tmp_path / "c_ray", ray="auto", **ckw)
    assert [c.index for c in c_ray.concepts] == [c.index for c in c_here.concepts]
    for a, b in zip(c_here.concepts, c_ray.concepts):
        assert b.importance == pytest.approx(a.importance, rel=1e-3, abs=1e-4)
        assert [e.box for e in b.examples] == [e.box for e in a.examples]

    dkw = dict(layer="blocks.11", atoms=4, chunk=2, stability=False, examples=4, icons=False, progress=False)
    d_here = concept_dictionary("efficientnet_lite0", BUNDLED_DIR, store=tmp_path / "d_here", **dkw)
    d_ray = concept_dictionary("efficientnet_lite0", BUNDLED_DIR, store=tmp_path / "d_ray", ray="auto", **dkw)
    np.testing.assert_allclose(np.stack([a.direction for a in d_ray.atoms]),
                               np.stack([a.direction for a in d_here.atoms]), atol=1e-4)
    for a, b in zip(d_here.atoms, d_ray.atoms):
        assert [x.label for x in b.drives] == [x.label for x in a.drives]
        assert [e.box for e in b.examples] == [e.box for e in a.examples]


def photos(folder, n: int = 16):
    """``n`` views of the bundled photographs (rotated), so that a run has enough chunks to lose a node among."""
    from PIL import Image

    folder.mkdir(parents=True)
    names = ["dog", "chelsea", "coffee", "collies", "giraffe", "multiple_dogs"]
    for i in range(n):
        Image.open(bl.bundled_image(names[i % len(names)])).convert("RGB").rotate(5 * i).save(folder / f"{i:02d}.jpg")
    return folder


def test_a_node_lost_mid_run_and_the_index_still_finishes_the_same(cluster, tmp_path):
    c, nodes = cluster
    folder = photos(tmp_path / "photos")
    store = IconStore(tmp_path / "ray")
    shards = tmp_path / "ray" / "index"
    kept: dict[str, int] = {}

    def finished() -> dict[str, int]:  # shard files under their final names (a write in flight is a .tmp- file)
        return {p.name: p.stat().st_mtime_ns for p in shards.glob("*/shards/[0-9]*.npz")}

    def remove_a_node() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and len(finished()) < 2:
            time.sleep(0.02)
        kept.update(finished())
        c.remove_node(nodes[1])

    remover = threading.Thread(target=remove_a_node, daemon=True)
    remover.start()
    opts = dict(k=3, samples=1, classes=2, chunk=1, progress=False)
    logs: list[str] = []
    remote = build_index(folder, "efficientnet_lite0", ["blocks.7"], store=store, ray="auto", log=logs.append, **opts)
    remover.join(60)
    assert 2 <= len(kept) < 16 and alive_nodes() == 2, "the node was not removed while the index ran"
    now = finished()
    assert len(now) == 16 and {k: now[k] for k in kept} == kept  # the shards written before the loss are untouched
    for p in shards.glob("*/shards/[0-9]*.npz"):  # nothing half written: every shard reads whole
        assert npz_load(p.read_bytes())["ids"].size == 1
    local = build_index(folder, "efficientnet_lite0", ["blocks.7"], store=tmp_path / "here", **opts)
    same_index(local, remote)
