"""Folder jobs in chunks of images: :class:`ChunkRunner` runs one phase's chunk payloads as shards of the engine.

Class concepts and the concept dictionary split a folder's images into chunks (``spans``) and run each phase's task
over them with :func:`~blocklens.jobs.engine.run_shards` (shards in the store under a prefix, resumable, on this
process, local processes or Ray); the runner holds what every phase of a run shares.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..store import IconStore
from .backends import Backend
from .engine import Shard, read_shards, run_shards, shard_path
from .progress import Progress
from .worker import WorkerRef

__all__ = ["ChunkRunner"]


@dataclass
class ChunkRunner:
    """How a run's chunks are computed: the driver's model, the workers' :class:`~blocklens.jobs.WorkerRef`, the
    backend, the store, chunk size, the run's ``title`` (on its bars), progress (bar and callback) and the log."""

    model: Any
    worker: WorkerRef
    backend: Backend
    store: IconStore
    chunk: int
    title: str = "job"
    show: bool = False
    on_progress: Callable[[Progress], None] | None = None
    say: Callable[[str], None] = field(default=lambda msg: None)

    def shards(self, prefix: str, payloads: list) -> list[Shard]:
        return [Shard(n, len(p.images), p, shard_path(prefix, n)) for n, p in enumerate(payloads)]

    def compute(self, phase: str, prefix: str, payloads: list, fn) -> list[Shard]:
        """Run ``fn`` over the chunk payloads (each with its ``images``) as shards under ``prefix``, raising when a
        chunk failed; the shards (read them with :func:`~blocklens.jobs.read_shards` or one by one)."""
        shards = self.shards(prefix, payloads)
        report = run_shards(shards, fn, worker=self.worker, backend=self.backend, store=self.store,
                            model=self.model, phase=phase, desc=f"{self.title}: {phase}", unit="img",
                            progress=self.show, on_progress=self.on_progress, log=self.say,
                            label=lambda s: f"{phase} chunk {s.index} ({s.payload.images[0]}..)")
        report.raise_if_failed("chunk")
        return shards

    def run(self, phase: str, prefix: str, payloads: list, fn) -> list[dict[str, np.ndarray]]:
        """:meth:`compute`, then every shard's arrays, in order."""
        return read_shards(self.store, self.compute(phase, prefix, payloads, fn), f"{phase} chunk")

    def spans(self, n: int) -> list[tuple[int, int]]:
        return [(s, min(s + self.chunk, n)) for s in range(0, n, self.chunk)]
