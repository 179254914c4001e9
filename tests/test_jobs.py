"""The job engine (blocklens.jobs): one fake job run here, on local worker processes and on Ray gives the same shards,
resumes after a kill -9 without redoing a finished shard, reports progress that only rises, and reports failed shards
and retries lost workers."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fakejob
from conftest import kill_9_after
from blocklens.errors import BlocklensError
from blocklens.jobs import Backend, Shard, WorkerRef, finished, read_shards, run_shards, shard_path
from blocklens.store import IconStore

N = 8
WORKER = WorkerRef("fake", fakejob.FINGERPRINT, loader=fakejob.load_fake)


def shards(n: int = N, **payload) -> list[Shard]:
    return [Shard(i, 3, {"start": 3 * i, "n": 3, **payload}, shard_path("fake/run", i)) for i in range(n)]


def run(store: IconStore, backend: Backend, **payload):
    seen = []
    report = run_shards(shards(**payload), fakejob.square, worker=WORKER, backend=backend, store=store,
                        model=fakejob.FakeModel(), phase="fake", progress=False, on_progress=seen.append)
    return report, seen


def check_rising(seen) -> None:
    done = [p.done for p in seen]
    assert done == sorted(done) and done[-1] == seen[-1].total == 3 * N
    assert seen[-1].eta == 0.0 and all(p.phase == "fake" for p in seen)


def check_same(a: IconStore, b: IconStore) -> None:
    for x, y in zip(read_shards(a, shards()), read_shards(b, shards())):
        assert set(x) == set(y) == {"x", "y", "pid", "model"}
        np.testing.assert_array_equal(x["x"], y["x"])
        np.testing.assert_array_equal(x["y"], y["y"])


def test_here_and_on_local_workers_the_same_shards_and_progress_that_rises(tmp_path):
    here, seen_here = run(IconStore(tmp_path / "here"), Backend(workers=0))
    there, seen_there = run(IconStore(tmp_path / "there"), Backend(workers=2, threads=1))
    assert (here.done, here.present, here.errors) == (N, 0, []) and (there.done, there.errors) == (N, [])
    check_same(IconStore(tmp_path / "here"), IconStore(tmp_path / "there"))
    pids = {int(s["pid"]) for s in read_shards(IconStore(tmp_path / "there"), shards())}
    assert os.getpid() not in pids and {int(s["pid"]) for s in read_shards(IconStore(tmp_path / "here"), shards())} \
        == {os.getpid()}
    check_rising(seen_here)
    check_rising(seen_there)
    again, seen = run(IconStore(tmp_path / "there"), Backend(workers=2, threads=1))
    assert (again.present, again.done) == (N, 0) and [p.done for p in seen] == [0, 3 * N]  # the start, then all


def test_on_ray_the_same_shards(tmp_path):
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(fakejob)  # Ray workers do not have the tests folder on their path
    run(IconStore(tmp_path / "here"), Backend(workers=0))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        report, seen = run(IconStore(tmp_path / "ray"), Backend(ray="auto"))
    finally:
        ray.shutdown()
    assert (report.done, report.errors) == (N, [])
    check_same(IconStore(tmp_path / "here"), IconStore(tmp_path / "ray"))
    check_rising(seen)


def test_a_failing_shard_is_reported_and_the_rest_kept(tmp_path):
    store = IconStore(tmp_path / "s")
    report, seen = run(store, Backend(workers=0), fail=6)
    assert report.done == N - 1 and [e["shard"] for e in report.errors] == [2]
    assert "fails on purpose" in report.errors[0]["error"] and seen[-1].failed == 3
    with pytest.raises(BlocklensError, match="1 chunk"):
        report.raise_if_failed("chunk")
    assert finished(store, shards()) == set(range(N)) - {2}
    again, _ = run(store, Backend(workers=0))
    assert (again.present, again.done, again.errors) == (N - 1, 1, [])


def test_a_lost_worker_is_replaced_and_its_shards_run_again(tmp_path):
    store = IconStore(tmp_path / "s")
    report, seen = run(store, Backend(workers=1, threads=1), die_once=str(tmp_path / "died"))
    assert (tmp_path / "died").exists() and report.retried >= 1
    assert (report.done, report.errors) == (N, [])
    check_rising(seen)


def test_kill_9_mid_run_then_resume_redoes_no_finished_shard(tmp_path):
    """The driver is killed (kill -9) while two local workers compute; its workers die with it. A second run
    computes exactly the missing shards (the finished ones keep their files untouched) and the result equals an
    uninterrupted run's."""
    store_dir = tmp_path / "store"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import fakejob, test_jobs
        from blocklens.jobs import Backend
        from blocklens.store import IconStore
        test_jobs.run(IconStore({str(store_dir)!r}), Backend(workers=2, threads=1), delay=0.4)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    kill_9_after(proc, lambda: len(list(store_dir.glob("fake/run/[0-9]*.npz"))), 2)
    time.sleep(0.5)  # the workers die with their parent; give the kernel a moment
    before = {p.name: p.stat().st_mtime_ns for p in store_dir.glob("fake/run/[0-9]*.npz")}
    assert 2 <= len(before) < N
    store = IconStore(store_dir)
    report, seen = run(store, Backend(workers=0))
    assert (report.present, report.done, report.errors) == (len(before), N - len(before), [])
    assert {p.name: p.stat().st_mtime_ns for p in store_dir.glob("fake/run/[0-9]*.npz") if p.name in before} == before
    check_rising(seen)
    run(IconStore(tmp_path / "whole"), Backend(workers=0))
    check_same(store, IconStore(tmp_path / "whole"))
