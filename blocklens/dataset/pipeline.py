"""The image pipeline of every folder job: files decoded and preprocessed ahead of the model, in order, on threads.

:func:`input_batches` yields the model inputs of a list of images in batches, in the order given, while the next
batches are decoded on ``workers`` threads (Pillow releases the interpreter lock while it decodes and resizes, so
threads decode in parallel without a process to start per chunk); each batch is moved to the model's device
(through pinned memory, without blocking, on a GPU). Unreadable files are skipped and reported with their reason,
as before. The decode is :meth:`~blocklens.models.Model.prepare`, so the numbers are the same with any number of
workers (0: decode in this thread, between batches).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import ImageError

__all__ = ["InputBatch", "input_batches", "default_loader_workers"]


def default_loader_workers() -> int:
    """Decoding threads when none are asked for: one per core beyond the first, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass
class InputBatch:
    """One batch: the readable images' ``ids`` (as given), their inputs ``x`` ``(B, C, S, S)`` on the model's
    device (None when none was readable), and ``skipped`` ``{path: reason}`` of the unreadable ones."""

    ids: list[int]
    x: object
    skipped: dict[str, str] = field(default_factory=dict)


def _decode(model, root: Path, rel: str):
    try:
        return model.prepare(root / rel)[0], None
    except (ImageError, OSError) as e:
        return None, str(e).replace(str(root / rel), rel)


def _to_device(model, xs: list):
    import torch

    x = torch.cat(xs)
    device = model.device
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def input_batches(model, root: Path, images: Sequence[str], ids: Sequence[int], batch: int = 16,
                  workers: int | None = None) -> Iterator[InputBatch]:
    """The inputs of ``images`` (relative to ``root``; ``ids`` their numbers) in batches of up to ``batch``
    readable images, in order, decoded ahead on ``workers`` threads (None: :func:`default_loader_workers`)."""
    workers = default_loader_workers() if workers is None else int(workers)
    pairs = list(zip(images, ids))
    if workers <= 0:
        decoded = (_decode(model, root, rel) for rel, _ in pairs)
        yield from _batched(model, pairs, decoded, batch)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blocklens-decode") as pool:
        # map submits every file at once and yields in order: decoding runs ahead of the model
        yield from _batched(model, pairs, pool.map(lambda p: _decode(model, root, p[0]), pairs), batch)


def _batched(model, pairs, decoded, batch: int) -> Iterator[InputBatch]:
    ids, xs, skipped = [], [], {}
    for (rel, i), (x, why) in zip(pairs, decoded):
        if x is None:
            skipped[rel] = why
            continue
        ids.append(int(i))
        xs.append(x)
        if len(xs) == batch:
            yield InputBatch(ids, _to_device(model, xs), skipped)
            ids, xs, skipped = [], [], {}
    if xs or skipped:
        yield InputBatch(ids, _to_device(model, xs) if xs else None, skipped)
