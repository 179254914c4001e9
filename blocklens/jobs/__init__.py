"""Jobs: one engine for every long run (sharded, resumable, on this process, local processes or Ray), with progress.

- :mod:`.worker`: how a worker rebuilds the model (:class:`WorkerRef`) and stays safe to kill.
- :mod:`.backends`: where tasks run (:class:`Backend`), and the driver's model (:func:`driver_model`).
- :mod:`.engine`: the sharded run (:func:`run_shards`, :class:`Shard`), shard bytes (:func:`npz_bytes`).
- :mod:`.chunks`: a folder job's phases in chunks of images (:class:`ChunkRunner`).
- :mod:`.progress`: what ``on_progress`` callbacks get (:class:`Progress`) and a phase's bar (:class:`Tracker`).
"""
from .backends import Backend, default_threads, driver_model, local_devices, run_local, run_ray
from .chunks import ChunkRunner
from .engine import (RunReport, Shard, ShardTask, execute_task, finished, npz_bytes, npz_load, read_shards, run_shards, run_task,
                     shard_path)
from .progress import Progress, Tracker
from .worker import WorkerRef, describe_error, parent_alive, use_threads, worker_model

__all__ = ["Backend", "ChunkRunner", "RunReport", "Shard", "ShardTask", "Progress", "Tracker", "WorkerRef", "run_shards",
           "read_shards", "finished", "run_task", "execute_task", "shard_path", "npz_bytes", "npz_load", "driver_model",
           "default_threads", "local_devices", "run_local", "run_ray", "describe_error", "parent_alive",
           "use_threads", "worker_model"]
