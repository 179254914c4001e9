"""A fake job for the engine's tests: a model that is only a fingerprint, and a task that squares numbers slowly.

Imported by the tests and by the worker processes they start (local processes get the tests folder on their path;
Ray workers get this module by value)."""
from __future__ import annotations

import os
import time

import numpy as np

FINGERPRINT = "fake0123456789ab"


class FakeModel:
    """What a worker needs of a model here: a name and a fingerprint."""

    name = "fake"
    fingerprint = FINGERPRINT


def load_fake() -> FakeModel:
    return FakeModel()


def square(model, payload: dict, store) -> dict:
    """The shard of ``payload`` (``start``, ``n``, ``delay`` seconds): its numbers, their squares and the pid that
    computed them; ``fail`` (a start) raises on that shard; ``die_once`` (a file path): the worker computing the
    first shard exits at once, the first time (a lost worker)."""
    marker = payload.get("die_once")
    if marker and payload["start"] == 0 and not os.path.exists(marker):  # the worker is lost, once
        open(marker, "w").close()
        os._exit(1)
    if payload.get("fail") == payload["start"]:
        raise ValueError(f"shard starting at {payload['start']} fails on purpose")
    time.sleep(payload.get("delay", 0.0))
    x = np.arange(payload["start"], payload["start"] + payload["n"], dtype=np.int64)
    return {"x": x, "y": x * x, "pid": np.asarray(os.getpid()), "model": np.asarray(model.fingerprint)}
