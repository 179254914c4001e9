"""The worker's side of a job: how a worker process rebuilds the model it was asked for, and stays safe to kill.

A worker never gets a pickled module: it gets a :class:`WorkerRef` (the model's spec string, its weights file, the
weight fingerprint the plan was made for, the device, torch threads, or a picklable ``loader``) and rebuilds the
model once per process (:func:`worker_model`), refusing to work on other weights than the plan's. Local workers
die with the process that started them (Linux: ``PR_SET_PDEATHSIG``), and a worker checks :func:`parent_alive`
before writing, so an orphan never writes behind a resumed run.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import BlocklensError

__all__ = ["WorkerRef", "worker_model", "use_threads", "parent_alive", "init_worker", "describe_error", "WORKER"]

#: This worker process's state: its parent's pid, torch threads, device and the models it has built.
WORKER: dict[str, Any] = {"models": {}}


@dataclass(frozen=True)
class WorkerRef:
    """How a worker builds the model of a run (picklable): ``model`` a spec string (:func:`blocklens.load_model`),
    ``weights`` the state dict file that goes with it, ``fingerprint`` the weights the plan was made for,
    ``device`` (None: the worker's own, else cuda when visible, else cpu), ``threads`` (torch threads in the
    worker) and ``loader`` (a picklable function returning the model, instead of the spec)."""

    model: str
    fingerprint: str
    weights: str | None = None
    device: str | None = None
    threads: int | None = None
    loader: Callable[[], Any] | None = None


def describe_error(e: BaseException) -> str:
    """``Type: message``, cut at 2000 characters: what a summary or a log line says of a failed job."""
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) < 2000 else text[:2000] + "..."


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


def init_worker(threads: int | None, devices, parent: int) -> None:
    """Initializer of a local worker process: torch threads, its device (from the ``devices`` queue), and death
    with its parent."""
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


def worker_model(ref: WorkerRef):
    """The model of ``ref`` in this worker, built once per (spec, weights, fingerprint, device) from the spec (or
    the ``loader``); raises when its weights are not the ones the plan was made for."""
    from ..models.devices import resolve_device, to_device

    device = resolve_device(ref.device or WORKER.get("device"))
    cache_key = (ref.model, ref.weights, ref.fingerprint, device)
    model = WORKER["models"].get(cache_key)
    if model is None:
        if ref.loader is not None:
            model = ref.loader()
            if device != "cpu" and hasattr(model, "module"):
                to_device(model, device)
        else:
            from ..models import load_model
            from ..models.spec import RandomWeightsWarning

            with warnings.catch_warnings():  # the driver has said so already
                warnings.simplefilter("ignore", RandomWeightsWarning)
                model = load_model(ref.model, weights=ref.weights, device=device)  # rebuilt from the spec
        if model.fingerprint != ref.fingerprint:
            raise BlocklensError(f"the worker's model {ref.model!r} has weight fingerprint {model.fingerprint}, but "
                                 f"the plan is for {ref.fingerprint}: install the same weights on every machine")
        WORKER["models"][cache_key] = model
    return model
