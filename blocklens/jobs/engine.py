"""The sharded run: one engine for every long job (precompute's icons, the index, class concepts' phases).

A run is a list of :class:`Shard` s (a fixed, ordered split of the work: batches of icons, chunks of images) and one
task function ``fn(model, payload, store)``, a module-level function so that it pickles. :func:`run_shards`:

- skips the shards already finished: a shard with a ``path`` is finished when that file is in the store (the task's
  arrays as one ``.npz``, written atomically, so a run killed at any moment resumes where it stopped); a shard
  without one (icons, which the task puts one by one) is always run and its task skips what is there;
- runs the rest on a :class:`~blocklens.jobs.backends.Backend` (this process, local processes or Ray) through the
  same code: a worker gets a :class:`ShardTask`, rebuilds the model from its
  :class:`~blocklens.jobs.worker.WorkerRef`, computes, and writes the shard itself when it reaches the store (a
  local folder, an object store), else returns the bytes and the driver writes them;
- collects errors per shard (the run goes on), retries shards whose worker was lost (a killed process, a dead
  node) up to ``retry_lost`` more rounds, checks that a worker's write is visible to the driver, and reports
  progress (done, total, ETA) through ``on_progress`` and a bar.

:func:`read_shards` reads the arrays of finished shards back, in order.
"""
from __future__ import annotations

import io
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import BlocklensError
from ..store import IconStore
from .backends import Backend
from .progress import Progress, Tracker
from .worker import WorkerRef, describe_error, parent_alive, use_threads, worker_model

__all__ = ["Shard", "ShardTask", "RunReport", "run_shards", "read_shards", "run_task", "execute_task", "shard_path", "finished",
           "npz_bytes", "npz_load", "LOST_WORKER"]

#: Errors that mean the worker was lost, not that the task failed: such shards are run again.
LOST_WORKER = ("BrokenProcessPool", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
               "ObjectReconstructionFailedError", "RaySystemError", "LocalRayletDiedError")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as the bytes of one ``.npz`` file (a shard)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz_load(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a shard's bytes (no pickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def shard_path(prefix: str, index: int) -> str:
    """The store file of shard ``index`` under ``prefix``: ``<prefix>/000012.npz``."""
    return f"{prefix}/{int(index):06d}.npz"


@dataclass
class Shard:
    """One part of a run: ``index`` (its place in the run), ``size`` (units of work in it, images or icons: what
    progress counts), ``payload`` (what the task reads; picklable) and ``path`` (the store file that keeps its
    arrays, see :func:`shard_path`; None when the task keeps its own results, as precompute's icons)."""

    index: int
    size: int
    payload: Any
    path: str | None = None


@dataclass
class ShardTask:
    """What a worker gets: the task function, its shard, how to build the model, the store (URL and options)
    and whether the worker writes the shard itself (``write``) or returns its bytes to the driver."""

    fn: Callable
    shard: Shard
    worker: WorkerRef
    store: str | None
    storage_options: dict = field(default_factory=dict)
    write: bool = True


def execute_task(task: ShardTask, model, store: IconStore | None) -> dict:
    """Run one task with ``model`` and ``store`` (None: the worker does not write): the shard's arrays written to
    its ``path`` (or returned as ``data``), or the task's own result as ``result``. A shard whose file is already
    there (a task retried after its node died, or another run's) is kept as it is (``kept``), never written twice."""
    t0 = time.perf_counter()
    res = {"shard": task.shard.index, "pid": os.getpid(), "host": socket.gethostname(), "data": None, "result": None,
           "kept": False}
    if store is not None and task.shard.path is not None and store.files.isfile(task.shard.path):
        res.update(kept=True, seconds=time.perf_counter() - t0)  # a retried task whose first try had written it
        return res
    out = task.fn(model, task.shard.payload, store)
    if task.shard.path is None:
        res["result"] = out
    else:
        data = npz_bytes(out)
        if not parent_alive():  # the run was killed: write nothing behind its back
            os._exit(1)
        if store is not None:
            store.files.write(task.shard.path, data)
        else:
            res["data"] = data
    res["seconds"] = time.perf_counter() - t0
    return res


def run_task(task: ShardTask) -> dict:
    """Worker entry point (a local process or a Ray task): build the model once per process, run the task."""
    use_threads(task.worker.threads)
    model = worker_model(task.worker)
    store = IconStore(task.store, storage_options=task.storage_options) if task.write and task.store else None
    return execute_task(task, model, store)


@dataclass
class RunReport:
    """What a run did: shards ``total``, already ``present``, ``done`` by this run, ``errors`` (per failed shard:
    ``shard``, ``error``), ``results`` (shard index -> the task's result, for shards without a path),
    ``retried`` (shards run again after their worker was lost), ``seconds`` and ``first_result_seconds``."""

    phase: str
    total: int
    present: int = 0
    done: int = 0
    retried: int = 0
    errors: list[dict] = field(default_factory=list)
    results: dict[int, Any] = field(default_factory=dict)
    seconds: float = 0.0
    first_result_seconds: float | None = None

    @property
    def failed(self) -> int:
        return len(self.errors)

    def raise_if_failed(self, what: str) -> None:
        """Raise one error naming every failed shard of ``what`` ("chunk", "batch")."""
        if self.errors:
            raise BlocklensError(f"{len(self.errors)} {what}(s) of the {self.phase} failed (run again to retry "
                                 "them): " + "; ".join(e["error"] for e in self.errors))


def finished(store: IconStore, shards: Sequence[Shard]) -> set[int]:
    """Indices of the shards whose file is in the store (one listing per folder, not one look-up per shard)."""
    folders: dict[str, set[str]] = {}
    for s in shards:
        if s.path is not None:
            folders.setdefault(s.path.rsplit("/", 1)[0] if "/" in s.path else "", set())
    for folder, names in folders.items():
        names.update(rel for rel, _, _ in store.files.walk(folder))
    return {s.index for s in shards if s.path is not None
            and s.path in folders[s.path.rsplit("/", 1)[0] if "/" in s.path else ""]}


def _lost(e: BaseException) -> bool:
    return any(type(c).__name__ in LOST_WORKER for c in (e, e.__cause__, e.__context__) if c is not None)


@dataclass
class _Round:
    """The driver's side of one run: writes, checks, counts and progress of the tasks as they come back."""

    store: IconStore
    report: RunReport
    tracker: Tracker
    on_result: Callable | None
    on_error: Callable | None
    say: Callable[[str], None]
    label: Callable[[Shard], str]
    t0: float
    retry: bool = True
    lost: list = field(default_factory=list)

    def result(self, task: ShardTask, res: dict) -> None:
        if self.report.first_result_seconds is None:
            self.report.first_result_seconds = time.perf_counter() - self.t0
        shard = task.shard
        try:
            if res.get("data") is not None and not self.store.files.isfile(shard.path):
                self.store.files.write(shard.path, res["data"])
            elif shard.path is not None and not self.store.files.isfile(shard.path):
                raise BlocklensError(
                    f"worker {res.get('pid')} on {res.get('host')} wrote {shard.path} but this process does not find "
                    f"it in {self.store.url}: on several machines the store must be one they all reach (an object "
                    "store URL such as s3://bucket/blocklens, or a network folder mounted at the same path)")
            if self.on_result is not None:
                self.on_result(shard, res.get("result"))
        except BlocklensError as e:
            self.error(task, e)
            return
        if shard.path is None:
            self.report.results[shard.index] = res.get("result")
        self.report.done += 1
        self.tracker.update(shard.size)

    def error(self, task: ShardTask, e: BaseException) -> None:
        if self.retry and _lost(e):
            self.lost.append(task)
            return
        text = f"{self.label(task.shard)}: {describe_error(e)}"
        self.report.errors.append({"shard": task.shard.index, "error": text})
        self.say(text)
        if self.on_error is not None:
            self.on_error(task.shard, text)
        self.tracker.fail(task.shard.size)


def run_shards(shards: Sequence[Shard], fn: Callable, *, worker: WorkerRef, backend: Backend, store: IconStore,
               model=None, phase: str = "run", desc: str | None = None, unit: str = "it",
               progress: bool | None = None, on_progress: Callable[[Progress], None] | None = None,
               on_result: Callable[[Shard, Any], None] | None = None,
               on_error: Callable[[Shard, str], None] | None = None, log: Callable[[str], None] | None = None,
               label: Callable[[Shard], str] | None = None, retry_lost: int = 2,
               stop_after: int | None = None, present: set[int] | None = None) -> RunReport:
    """Run every unfinished shard (see the module docstring) and return the :class:`RunReport`.

    ``fn(model, payload, store)``: the task (returns arrays for a shard with a ``path``, anything picklable
    otherwise; ``store`` is None in a worker that does not write). ``model``: the driver's model, used when
    ``backend`` runs here. ``on_result(shard, result)``: called in this process for each finished shard (raise
    :class:`BlocklensError` to count the shard as failed); ``on_error(shard, text)`` for each failed one (after
    its retries). ``progress``: a bar on stderr (default: when it is
    a terminal); ``on_progress(Progress)`` after every shard. ``stop_after``: run at most that many shards
    (testing a resume). ``present``: the shards known finished (:func:`finished`), to save a listing."""
    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    present = finished(store, shards) if present is None else set(present)
    todo = [s for s in shards if s.index not in present]
    if stop_after is not None:
        todo = todo[:stop_after]
    report = RunReport(phase, len(shards), present=len(present))
    write = store.shared or not backend.remote
    show = sys.stderr.isatty() if progress is None else progress
    total = sum(s.size for s in shards if s.index in present) + sum(s.size for s in todo)
    with Tracker(phase, total, on_progress=on_progress, show=show, desc=desc, unit=unit) as tracker:
        tracker.update(sum(s.size for s in shards if s.index in present))
        state = _Round(store=store, report=report, tracker=tracker, on_result=on_result, on_error=on_error, say=say,
                       label=label or (lambda s: f"shard {s.index}"), t0=t0)
        tasks = [ShardTask(fn, s, worker, store.url, dict(store.storage_options), write) for s in todo]
        for attempt in range(retry_lost + 1):
            state.retry = attempt < retry_lost
            state.lost = []
            backend.run(tasks, fn=run_task, execute=lambda task: execute_task(task, model, store if task.write else None),
                        on_result=state.result, on_error=state.error)
            if not state.lost:
                break
            tasks = state.lost
            report.retried += len(tasks)
            say(f"{len(tasks)} {phase} shard(s) lost their worker; running them again")
    report.seconds = time.perf_counter() - t0
    return report


def read_shards(store: IconStore, shards: Sequence[Shard], what: str = "shard") -> list[dict[str, np.ndarray]]:
    """The arrays of every shard, in order; raises naming the first one missing from the store."""
    out = []
    for s in shards:
        data = store.files.read(s.path)
        if data is None:
            raise BlocklensError(f"{what} {s.index} ({s.path}) is not in {store.url} although its run finished: with "
                                 "Ray on several machines the store must be one they all reach (an object store URL, "
                                 "or a network folder mounted at the same path); else run again")
        out.append(npz_load(data))
    return out
