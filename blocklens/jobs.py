"""Jobs: run picklable jobs on local worker processes, Ray tasks or this process, for precompute and the index.

A job is any picklable object with the fields a worker needs to rebuild the model: ``model`` (a spec string,
see :func:`blocklens.load_model`), ``weights`` (a state dict path or None), ``fingerprint`` (the weights the plan
was made for), ``device``, ``threads`` and ``loader`` (a picklable function returning the model, or None). A
worker never gets a pickled module: it rebuilds the model from the spec (:func:`worker_model`, once per process)
and refuses to work on other weights than the plan's.

- :func:`run_jobs` runs every job where asked: Ray tasks, spawned local processes or here, one by one, and calls
  ``on_result`` / ``on_error`` in this process for each.
- Local workers die with the process that started them (Linux: ``PR_SET_PDEATHSIG``), and a worker checks
  :func:`parent_alive` before writing, so an orphan never writes behind a resumed run.
- :func:`driver_model` is the driver's side: the model to plan with, and the spec workers rebuild it from.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable

from .errors import BlocklensError

__all__ = ["Progress", "Tracker", "run_jobs", "run_local", "run_ray", "worker_model", "use_threads", "parent_alive", "local_devices",
           "driver_model", "default_threads", "describe_error"]

@dataclass(frozen=True)
class Progress:
    """Where a run stands, as its ``on_progress`` callback gets it: ``done`` of ``total`` units (images, icons)
    in ``phase``, ``failed`` of them, ``eta`` seconds left (None until something was done), ``elapsed``."""

    phase: str
    done: int
    total: int
    failed: int = 0
    eta: float | None = None
    elapsed: float = 0.0

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


class Tracker:
    """One phase's progress: a bar with rate and ETA on stderr (when ``show``) and ``on_progress(Progress)`` after
    every step, ``done`` never going down. ``update(n)`` counts ``n`` more units done (tqdm's name), ``fail(n)``
    ``n`` more done that failed. A context manager (closes the bar)."""

    def __init__(self, phase: str, total: int, *, on_progress: Callable[[Progress], None] | None = None,
                 show: bool = False, desc: str | None = None, unit: str = "it"):
        import time

        from tqdm.auto import tqdm

        self.phase, self.total, self.done, self.failed = phase, int(total), 0, 0
        self._on, self._t0, self._clock = on_progress, time.perf_counter(), time.perf_counter
        self._bar = tqdm(total=self.total, desc=desc or phase, unit=unit, disable=not show or not self.total,
                         smoothing=0.1, dynamic_ncols=True)
        self._tell()

    def progress(self) -> Progress:
        elapsed = self._clock() - self._t0
        eta = elapsed * (self.total - self.done) / self.done if 0 < self.done < self.total else (
            0.0 if self.done >= self.total else None)
        return Progress(self.phase, self.done, self.total, self.failed, eta, elapsed)

    def _tell(self) -> None:
        if self._on is not None:
            self._on(self.progress())

    def update(self, n: int = 1) -> None:
        n = max(0, min(int(n), self.total - self.done))
        self.done += n
        self._bar.update(n)
        self._tell()

    def fail(self, n: int = 1) -> None:
        self.failed += int(n)
        self.update(n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: This worker process's state: its parent's pid, torch threads, device and the models it has built.
WORKER: dict[str, Any] = {"models": {}}


def describe_error(e: BaseException) -> str:
    """``Type: message``, cut at 2000 characters: what a summary or a log line says of a failed job."""
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) < 2000 else text[:2000] + "..."


# -------------------------------------------------------------------------------------------- worker side


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when the process that started it dies (kill -9 included),
    so that an orphan never keeps writing to the store behind a resumed run."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - best effort
        pass


def _init_worker(threads: int | None, devices, parent: int) -> None:
    """Initializer of a local worker process: torch threads, its device, and death with its parent."""
    WORKER["parent"] = parent
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    use_threads(threads)
    try:
        WORKER["device"] = devices.get(timeout=30)
    except Exception:  # pragma: no cover
        WORKER["device"] = None


def parent_alive() -> bool:
    """False in a local worker whose starting process has died (then the worker must not write anything)."""
    parent = WORKER.get("parent")
    return parent is None or os.getppid() == parent


def use_threads(threads: int | None) -> None:
    """Set torch's thread count in this worker (once per value)."""
    if threads and WORKER.get("threads") != threads:
        import torch

        torch.set_num_threads(threads)
        WORKER["threads"] = threads


def worker_model(job):
    """The job's model in this worker, built once per (spec, weights, fingerprint, device) from the spec (or the
    job's ``loader``); raises when its weights are not the ones the plan was made for."""
    import torch

    device = job.device or WORKER.get("device")
    if not device or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cache_key = (job.model, job.weights, job.fingerprint, device)
    model = WORKER["models"].get(cache_key)
    if model is None:
        if job.loader is not None:
            model = job.loader()
            if device != "cpu" and hasattr(model, "module"):
                model.module.to(device)
        else:
            from .models import load_model
            from .models.spec import RandomWeightsWarning

            with warnings.catch_warnings():  # the driver has said so already
                warnings.simplefilter("ignore", RandomWeightsWarning)
                model = load_model(job.model, weights=job.weights, device=device)  # rebuilt from the spec
        if model.fingerprint != job.fingerprint:
            raise BlocklensError(f"the worker's model {job.model!r} has weight fingerprint {model.fingerprint}, but "
                                 f"the plan is for {job.fingerprint}: install the same weights on every machine")
        WORKER["models"][cache_key] = model
    return model


# -------------------------------------------------------------------------------------------- driver side


def local_devices(device: str | None, workers: int) -> list[str | None]:
    """One device per local worker: ``cuda:i mod count`` for ``"cuda"``, the CPU otherwise (``None`` or
    ``"auto"``: CUDA where torch sees it)."""
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise BlocklensError("device 'cuda' was asked for but torch sees no GPU here")
        return [f"cuda:{i % n}" for i in range(workers)]
    return [device] * workers


def default_threads(threads: int | None, workers: int, ray: str | None) -> int | None:
    """Torch threads per worker when none are asked for: the CPU cores shared among local workers."""
    if threads is None and ray is None and workers > 0:
        return max(1, (os.cpu_count() or 1) // workers)
    return threads


def driver_model(model: Any, *, loader: Callable[[], Any] | None, weights, device: str | None,
                 remote: bool) -> tuple[Any, str | None, str | None]:
    """``(model, spec, weights)`` for a run: ``model`` is a spec string (loaded here, on the CPU when workers
    render, else on ``device``) or a Model (its own spec and weights, where it was loaded from one). Raises when
    workers (``remote``) would have no way to build the model."""
    from .models import load_model

    weights = str(weights) if weights is not None else None
    if isinstance(model, str):
        spec = model
        if loader is not None:
            model = loader()
        else:  # in this process, on the device asked for; workers load their own copy from the spec
            model = load_model(spec, weights=weights, device="cpu" if remote else local_devices(device, 1)[0])
    else:
        spec = getattr(model, "spec", None)
        if spec is not None and weights is None:
            weights = getattr(model, "weights", None)
    if remote and loader is None and spec is None:
        raise BlocklensError(f"model {model.name!r} is not a zoo model nor loaded from a spec (bl.load_model), so "
                             "workers cannot build it: pass loader= (a picklable function returning it) or "
                             "workers=0")
    return model, spec, weights


def run_local(jobs: list, workers: int, threads: int | None, device: str | None, on_result, on_error,
              fn: Callable) -> None:
    """Run ``fn(job)`` for each job on ``workers`` spawned processes (each with its own device)."""
    ctx = multiprocessing.get_context("spawn")
    devices = ctx.Queue()
    for d in local_devices(device, workers):
        devices.put(d)
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, devices, os.getpid()))
    try:
        futures = {ex.submit(fn, job): job for job in jobs}
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                res = fut.result()
            except Exception as e:
                on_error(job, e)
            else:
                on_result(job, res)
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def run_ray(jobs: list, address: str, threads: int | None, gpus_per_task: float, on_result, on_error,
            ray_init: dict | None = None, *, fn: Callable) -> None:
    """Run ``fn(job)`` for each job as a Ray task (``address``: ``"auto"``, a cluster address, or ``"local"``
    to start one; an already initialized Ray is used as is)."""
    try:
        import ray
    except ImportError:
        raise BlocklensError("--ray needs Ray, an optional dependency: pip install 'blocklens[ray]'") from None
    started = False
    if not ray.is_initialized():
        kw = dict(ray_init or {})
        kw.setdefault("log_to_driver", False)
        if address in (None, "", "local"):
            kw.setdefault("include_dashboard", False)
            ray.init(**kw)
        else:
            ray.init(address=address, **kw)
        started = True
    task = ray.remote(fn).options(num_cpus=threads or 1, num_gpus=gpus_per_task or 0)
    pending = {task.remote(job): job for job in jobs}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:
                    on_error(job, e)
                else:
                    on_result(job, res)
    except BaseException:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        raise
    finally:
        if started:
            ray.shutdown()


def run_jobs(jobs: list, *, ray: str | None, workers: int, threads: int | None, device: str | None,
             gpus_per_task: float, ray_init: dict | None, on_result, on_error, fn: Callable, execute: Callable) -> None:
    """Run every job where asked: Ray tasks (``ray``) or ``workers`` spawned processes calling ``fn(job)``, or
    here one by one with ``execute(job)``; ``on_result(job, result)`` / ``on_error(job, exception)`` for each, in
    this process."""
    if not jobs:
        return
    if ray is not None:
        run_ray(jobs, ray, threads, gpus_per_task, on_result, on_error, ray_init, fn=fn)
    elif workers > 0:
        run_local(jobs, workers, threads, device, on_result, on_error, fn=fn)
    else:
        for job in jobs:
            try:
                res = execute(job)
            except Exception as e:
                on_error(job, e)
            else:
                on_result(job, res)
