"""The app's background jobs: their records (:class:`RenderJob`, :class:`ConceptsJob`), how one runs
(:func:`run_job`) and the registry that holds them (:class:`JobRegistry`, bounded by one pruning rule).

A record is what ``GET /api/jobs/<id>`` answers (:meth:`status`): state (queued, running, done, error), stage,
progress and the time left. Its ``on_progress`` is the callback the library's long call reports to.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Hashable

from ..errors import BlocklensError
from ..jobs import Progress
from .checks import HTTPError
from .settings import MAX_JOBS

log = logging.getLogger("blocklens.web")

ACTIVE = ("queued", "running")
FINISHED = ("done", "error")


def _eta(started: float, fraction: float, after: float = 0.0) -> float | None:
    """Seconds left from the time spent so far and the fraction done (None until ``after`` of it is done)."""
    return (time.time() - started) * (1 - fraction) / fraction if after < fraction < 1 else None


@dataclass
class RenderJob:
    """Rendering the pictures an explanation still lacks (:func:`blocklens.explain.finish`). ``keys``: the icons
    the page lacks; ``ready``: those of them now in the store, in the order they landed (the page polls with
    ``since=ready_upto`` and shows each as it comes)."""

    id: str
    explanation: str
    keys: list[str]  # icons the page lacks
    grids: list[str]  # layers whose grid is missing, in render order
    state: str = "queued"  # queued | running | done | error
    stage: str = "queued"  # queued | icons | grid <layer> | done
    done: int = 0
    total: int = 0
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    ready: list[str] = field(default_factory=list)

    GRID_WEIGHT: ClassVar[int] = 16  # a grid weighs as much as 16 icons (measured: a quick grid ~ 16 icons)

    def on_progress(self, stage: str, done: int, total: int) -> None:
        """``finish``'s ``on_progress``: stage ``"icons"`` or ``"grid <layer>"``, ``done`` of ``total``."""
        self.stage, self.done, self.total = stage, done, total

    def waiting(self) -> list[str]:
        """The keys not announced as ready yet."""
        seen = set(self.ready)
        return [k for k in self.keys if k not in seen]

    def landed(self, keys: list[str]) -> None:
        """Announce ``keys`` (now in the store) as ready, each once."""
        seen = set(self.ready)
        self.ready.extend(k for k in dict.fromkeys(keys) if k not in seen)

    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        units = len(self.keys) + self.GRID_WEIGHT * len(self.grids)
        if not units:
            return 1.0
        within = self.done / self.total if self.total else 0.0
        icons = grids = 0.0
        if self.stage == "icons":
            icons = within
        elif self.stage.startswith("grid "):
            layer = self.stage[5:]
            icons, grids = 1.0, (self.grids.index(layer) if layer in self.grids else 0) + within
        return min(1.0, (len(self.keys) * icons + self.GRID_WEIGHT * grids) / units)

    def status(self, since: int = 0) -> dict:
        ready, frac = list(self.ready), self.fraction()
        return {"id": self.id, "explanation": self.explanation, "state": self.state, "stage": self.stage,
                "done": self.done, "total": self.total, "fraction": round(frac, 4), "eta_s": _eta(self.started, frac),
                "error": self.error, "ready": ready[since:], "ready_upto": len(ready)}


@dataclass
class ConceptsJob:
    """Computing a class's concepts over an index's folder (:func:`blocklens.dataset.concepts.class_concepts`).
    Its progress is the run's own (:meth:`on_progress`): images scanned, the factorization, images measured, then
    the icons of its concepts and of the pair's channels; chunks found in the store count as done."""

    id: str
    concepts: str  # the result's id (/api/concepts/<id>)
    label: str
    state: str = "queued"  # queued | running | done | error
    stage: str = "queued"  # queued | starting | scan | factorize | measure | icons | vocabulary icons | done
    done: int = 0
    total: int = 0
    message: str = ""
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    #: each stage's share of the whole (scan: one pass a class image; measure: k + 1 passes; icons: renders)
    WEIGHTS: ClassVar[dict] = {"scan": 0.3, "factorize": 0.05, "measure": 0.45, "icons": 0.12,
                               "vocabulary icons": 0.08}

    def on_progress(self, progress: Progress) -> None:
        """``class_concepts``' ``on_progress``: where the run stands."""
        self.stage, self.done, self.total = progress.phase, progress.done, progress.total

    def say(self, message: str) -> None:
        """``class_concepts``' ``log``: its latest line, shown with the progress."""
        self.message = message

    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        if self.stage not in self.WEIGHTS:
            return 0.0
        order = list(self.WEIGHTS)
        before = sum(self.WEIGHTS[s] for s in order[:order.index(self.stage)])
        within = self.done / self.total if self.total else 0.0
        return min(1.0, before + self.WEIGHTS[self.stage] * within)

    def status(self, since: int = 0) -> dict:
        frac = self.fraction()
        return {"id": self.id, "kind": "concepts", "concepts": self.concepts, "label": self.label,
                "state": self.state, "stage": self.stage, "done": self.done, "total": self.total,
                "fraction": round(frac, 4), "eta_s": _eta(self.started, frac, after=0.05),
                "elapsed_s": round(time.time() - self.started, 1), "message": self.message, "error": self.error,
                "ready": [], "ready_upto": 0}


def run_job(job, work: Callable[[], None]) -> None:
    """Run ``work()`` as ``job``: running, then done; or, when it raises, error with the reason. The job fails
    alone and says why; the server stays as it was."""
    job.state = "running"
    try:
        work()
        job.state, job.stage = "done", "done"
    except Exception as e:
        if not isinstance(e, BlocklensError):
            log.exception("%s %s failed", type(job).__name__, job.id)
        job.state = "error"
        job.error = str(e) if isinstance(e, BlocklensError) else f"{type(e).__name__}: {e}"
    finally:
        job.finished = time.time()


class JobRegistry:
    """The jobs the app knows, by id, and each subject's latest job (a subject: what a job is for, e.g.
    ``("render", explanation id)``). One pruning rule: beyond ``bound`` jobs, the finished ones are forgotten,
    oldest first; queued and running ones are always kept."""

    def __init__(self, bound: int = MAX_JOBS):
        self.bound = bound
        self._jobs: dict[str, object] = {}
        self._latest: dict[Hashable, str] = {}  # subject -> its latest job's id
        self._lock = threading.Lock()

    def start(self, subject: Hashable, make: Callable[[str], object]) -> tuple[object, bool]:
        """The subject's queued or running job, or a new one, ``make(new id)``, registered; and whether it is
        new (then the caller submits it). One job per subject at a time, however many ask at once."""
        with self._lock:
            job = self._jobs.get(self._latest.get(subject, ""))
            if job is not None and job.state in ACTIVE:
                return job, False
            job = make(uuid.uuid4().hex[:20])
            self._jobs[job.id] = job
            self._latest[subject] = job.id
            self._prune()
            return job, True

    def _prune(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.state in FINISHED), key=lambda j: j.started)
        for old in finished[:max(0, len(self._jobs) - self.bound)]:
            del self._jobs[old.id]
        self._latest = {s: i for s, i in self._latest.items() if i in self._jobs}

    def latest(self, subject: Hashable):
        """The subject's latest job (any state), or None."""
        with self._lock:
            return self._jobs.get(self._latest.get(subject, ""))

    def active(self, subject: Hashable):
        """The subject's queued or running job, or None."""
        job = self.latest(subject)
        return job if job is not None and job.state in ACTIVE else None

    def get(self, ident: str):
        """Job ``ident``; 404 when there is none (never was, or forgotten)."""
        with self._lock:
            job = self._jobs.get(ident)
        if job is None:
            raise HTTPError(404, f"no job {ident!r}")
        return job

    def running(self) -> int:
        with self._lock:
            return sum(j.state == "running" for j in self._jobs.values())

    def __contains__(self, ident: str) -> bool:
        with self._lock:
            return ident in self._jobs

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)
