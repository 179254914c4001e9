"""Where a run's tasks execute: this process, spawned local worker processes, or Ray tasks, behind one :class:`Backend`.

:class:`Backend` holds a run's execution options (``workers``, ``threads``, ``device``, ``ray``, ``gpus_per_task``,
``ray_init``), checks them once with errors that say what is valid, and runs a list of picklable tasks with
:meth:`Backend.run`: ``fn(task)`` on workers, or ``execute(task)`` here for ``workers=0``; ``on_result(task,
result)`` and ``on_error(task, exception)`` are called in this process, one task at a time.
:func:`driver_model` is the driver's side of the model: the model to plan with, and the spec workers rebuild it
from (:class:`~blocklens.jobs.worker.WorkerRef`).
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import BlocklensError
from .worker import WorkerRef, init_worker

__all__ = ["Backend", "driver_model", "local_devices", "default_threads", "run_local", "run_ray"]


def local_devices(device: str | None, workers: int) -> list[str | None]:
    """One device per local worker: ``cuda:i mod count`` for ``"cuda"``, the one asked for otherwise (``None`` or
    ``"auto"``: CUDA where torch sees it); a device that is not here raises (:func:`resolve_device`)."""
    import torch

    from ..models.devices import resolve_device

    device = resolve_device(device)
    if device == "cuda":
        n = torch.cuda.device_count()
        return [f"cuda:{i % n}" for i in range(workers)]
    return [device] * workers


def default_threads(threads: int | None, workers: int, ray: str | None) -> int | None:
    """Torch threads per worker when none are asked for: the CPU cores shared among local workers."""
    if threads is None and ray is None and workers > 0:
        return max(1, (os.cpu_count() or 1) // workers)
    return threads


@dataclass
class Backend:
    """Where tasks run: Ray (``ray``: ``"auto"``, an address, or ``"local"`` to start one; an initialized Ray is
    used as is), else ``workers`` spawned local processes (local worker *i* gets GPU *i* mod count for
    ``device="cuda"``), else this process (``workers=0``). ``threads``: torch threads per worker (default: the
    cores shared among local workers, 1 per Ray task); ``gpus_per_task``: GPUs a Ray task reserves (1 with
    ``device="cuda"``: Ray shows a task only the GPUs it reserved)."""

    workers: int = 0
    threads: int | None = None
    device: str | None = None
    ray: str | None = None
    gpus_per_task: float = 0
    ray_init: dict | None = None

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise BlocklensError(f"workers must be 0 (this process) or more, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise BlocklensError(f"threads must be at least 1, got {self.threads}")
        from ..models.devices import check_device_name

        self.device = None if self.device is None else check_device_name(self.device)
        if self.gpus_per_task < 0:
            raise BlocklensError(f"gpus_per_task must be 0 or more, got {self.gpus_per_task}")
        if self.ray is not None and self.device == "cuda" and not self.gpus_per_task:
            self.gpus_per_task = 1
        self.threads = default_threads(self.threads, self.workers, self.ray)

    @property
    def kind(self) -> str:
        """``"ray"``, ``"local"`` or ``"inline"``."""
        return "ray" if self.ray is not None else ("local" if self.workers > 0 else "inline")

    @property
    def remote(self) -> bool:
        """True when tasks run in other processes (which rebuild the model from its spec)."""
        return self.kind != "inline"

    def describe(self) -> str:
        return {"ray": f"Ray tasks ({self.ray})", "local": f"{self.workers} worker process"
                + ("es" if self.workers != 1 else ""), "inline": "this process"}[self.kind]

    def worker_device(self) -> str | None:
        """The device a task carries: None for local workers (each has its own) and for auto, else the one asked."""
        return None if self.device in (None, "auto") or self.ray is None else self.device

    def worker_ref(self, model, spec: str | None, weights: str | None, loader=None) -> WorkerRef:
        """The :class:`WorkerRef` of a run on this backend for a model planned with :func:`driver_model`."""
        return WorkerRef(spec or model.name, model.fingerprint, weights=weights, device=self.worker_device(),
                         threads=self.threads, loader=loader)

    def run(self, tasks: list, *, fn: Callable, execute: Callable, on_result, on_error) -> None:
        """``fn(task)`` for every task on the workers (``execute(task)`` here when ``workers=0``), with
        ``on_result(task, result)`` / ``on_error(task, exception)`` in this process."""
        if not tasks:
            return
        if self.kind == "ray":
            run_ray(tasks, self.ray, self.threads, self.gpus_per_task, on_result, on_error, self.ray_init, fn=fn)
        elif self.kind == "local":
            run_local(tasks, self.workers, self.threads, self.device, on_result, on_error, fn=fn)
        else:
            for task in tasks:
                try:
                    res = execute(task)
                except Exception as e:
                    on_error(task, e)
                else:
                    on_result(task, res)


def driver_model(model: Any, *, loader: Callable[[], Any] | None, weights, device: str | None,
                 remote: bool) -> tuple[Any, str | None, str | None]:
    """``(model, spec, weights)`` for a run: ``model`` is a spec string (loaded here, on the CPU when workers
    compute, else on ``device``) or a Model (its own spec and weights, where it was loaded from one). Raises when
    workers (``remote``) would have no way to build the model."""
    from ..models import load_model

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


def run_local(tasks: list, workers: int, threads: int | None, device: str | None, on_result, on_error,
              fn: Callable) -> None:
    """Run ``fn(task)`` for each task on ``workers`` spawned processes (each with its own device)."""
    ctx = multiprocessing.get_context("spawn")
    devices = ctx.Queue()
    for d in local_devices(device, workers):
        devices.put(d)
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                             initargs=(threads, devices, os.getpid()))
    try:
        futures = {ex.submit(fn, task): task for task in tasks}
        for fut in as_completed(futures):
            task = futures[fut]
            try:
                res = fut.result()
            except Exception as e:
                on_error(task, e)
            else:
                on_result(task, res)
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def _ray_init(ray, address: str | None, ray_init: dict | None) -> bool:
    """Connect to (or start) Ray unless it is initialized; True when this call did."""
    if ray.is_initialized():
        return False
    kw = dict(ray_init or {})
    kw.setdefault("log_to_driver", False)
    if address in (None, "", "local"):
        kw.setdefault("include_dashboard", False)
        ray.init(**kw)
    else:
        ray.init(address=address, **kw)
    return True


def run_ray(tasks: list, address: str, threads: int | None, gpus_per_task: float, on_result, on_error,
            ray_init: dict | None = None, *, fn: Callable, max_retries: int = 3) -> None:
    """Run ``fn(task)`` for each task as a Ray task (``address``: ``"auto"``, a cluster address, or ``"local"``
    to start one; an already initialized Ray is used as is). A task whose worker or node dies is retried by Ray
    up to ``max_retries`` times; an exception raised by ``fn`` is not retried there (the run reports it)."""
    try:
        import ray
    except ImportError:
        raise BlocklensError("--ray needs Ray, an optional dependency: pip install 'blocklens[ray]'") from None
    started = _ray_init(ray, address, ray_init)
    task_fn = ray.remote(fn).options(num_cpus=threads or 1, num_gpus=gpus_per_task or 0, max_retries=max_retries)
    pending = {task_fn.remote(task): task for task in tasks}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:
                    on_error(task, e)
                else:
                    on_result(task, res)
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
