"""The work of class concepts on the workers: one chunk of images scanned, or measured against fixed concepts.

:func:`scan_chunk` and :func:`measure_chunk` are the two tasks that :func:`blocklens.jobs.run_shards` runs (in this
process, local processes or Ray tasks); their payloads :class:`ScanChunk` and :class:`MeasureChunk` say which images
and what to compute. Each returns the arrays of one shard.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...analyses.factorize import nonneg_matrix, project, split_activations
from ...analyses.interventions import run_batch, scores_of
from ..pipeline import input_batches
from .rules import FLOOR

__all__ = ["ScanChunk", "MeasureChunk", "scan_chunk", "measure_chunk"]


@dataclass
class ScanChunk:
    """One chunk to scan (picklable): predictions, evidence-weighted samples of the class's images, and with
    ``vs`` the pair's channel attributions."""

    folder: str
    layer: str
    cls: int
    vs: int | None
    images: list[str]
    classes: list[int]            # per image: its folder label, or -1 (then the prediction decides)
    positions: int
    seed: int


@dataclass
class MeasureChunk:
    """One chunk to measure against fixed concepts (picklable): maps, removals, peaks."""

    folder: str
    layer: str
    cls: int
    vs: int | None
    images: list[str]
    components: Any               # (k, C') as fitted
    roles: list[int]              # 1 class image, 0 other image


def _inputs(model, root: Path, images: Sequence[str], ok: list):
    """``(i, rel, x)`` for every readable image (its model input on the model's device, decoded ahead on the
    pipeline's threads); ``ok`` gets 1 or 0 per image, in order, so the driver knows which rows are whose."""
    for b in input_batches(model, root, images, range(len(images)), batch=1):
        ok.extend([0] * len(b.skipped))  # the unreadable images before this one (or at the end)
        for i in b.ids:
            ok.append(1)
            yield i, images[i], b.x


def scan_chunk(model, job: ScanChunk, store=None) -> dict[str, np.ndarray]:
    """Per image: top-1 prediction and probability, the class's log-probability, ``positions`` sampled rows of the
    non-negative matrix (class images only), and with ``vs`` the pair's channel attributions."""
    import torch

    info = model.layer(job.layer)
    root = Path(job.folder)
    out = {k: [] for k in ("ok", "pred", "prob", "logprob", "rows", "row_image", "row_pos", "pair", "hi", "hi_pos",
                           "lo", "lo_pos", "neg")}
    for i, rel, x in _inputs(model, root, job.images, out["ok"]):
        x = x.requires_grad_(True)  # frozen weights: the input carries the graph
        with model.probe([info.name], grad=True) as probe:
            logits = probe.run(x, stop=False)
            act = probe.activations[info.name]
            s = scores_of(logits, [job.cls], "logprob")[0, 0]
            grads = [torch.autograd.grad(s, act, retain_graph=job.vs is not None)[0]]
            if job.vs is not None:
                grads.append(torch.autograd.grad(logits[0, job.cls] - logits[0, job.vs], act)[0])
        a = act.detach()[0].double().cpu().numpy()                          # (C, H, W)
        p = logits.detach().softmax(-1)[0]
        out["pred"].append(int(p.argmax()))
        out["prob"].append(float(p.max()))
        out["logprob"].append(float(s.detach()))
        out["neg"].append(bool(a.min() < 0))
        label = job.classes[i] if job.classes[i] >= 0 else int(p.argmax())
        if label == job.cls:
            ev = (a * grads[0].detach()[0].double().cpu().numpy()).sum(0).ravel()   # (H*W,) evidence per position
            w = np.maximum(ev, 0) + max(FLOOR * float(np.abs(ev).mean()), 1e-12)
            n = min(job.positions, w.size)
            rng = np.random.default_rng([job.seed, int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16)])
            pos = np.sort(rng.choice(w.size, size=n, replace=False, p=w / w.sum()))
            flat = a.reshape(a.shape[0], -1)[:, pos].T                         # (n, C)
            out["rows"].append(flat.astype(np.float32))
            out["row_image"] += [i] * n
            out["row_pos"] += pos.tolist()
        if job.vs is not None:
            rel_map = (a * grads[1].detach()[0].double().cpu().numpy()).reshape(a.shape[0], -1)   # (C, H*W)
            out["pair"].append(rel_map.sum(1).astype(np.float32))
            out["hi"].append(rel_map.max(1).astype(np.float32))
            out["hi_pos"].append(rel_map.argmax(1))
            out["lo"].append(rel_map.min(1).astype(np.float32))
            out["lo_pos"].append(rel_map.argmin(1))
    c = info.channels
    res = {"ok": np.asarray(out["ok"], np.int8), "pred": np.asarray(out["pred"], np.int64),
           "prob": np.asarray(out["prob"], np.float32), "logprob": np.asarray(out["logprob"], np.float32),
           "neg": np.asarray(out["neg"], bool),
           "rows": np.concatenate(out["rows"]) if out["rows"] else np.zeros((0, c), np.float32),
           "row_image": np.asarray(out["row_image"], np.int64), "row_pos": np.asarray(out["row_pos"], np.int64)}
    if job.vs is not None:
        for k in ("pair", "hi", "lo"):
            res[k] = np.stack(out[k]) if out[k] else np.zeros((0, c), np.float32)
        for k in ("hi_pos", "lo_pos"):
            res[k] = np.stack(out[k]).astype(np.int64) if out[k] else np.zeros((0, c), np.int64)
    return res


def measure_chunk(model, job: MeasureChunk, store=None) -> dict[str, np.ndarray]:
    """Per image: its concept maps (``loading``, float16), each concept's peak and its position, its share of the
    concept mass; for the class's images also the removal of each concept's share: the drop of the class's
    log-probability (and of the pair's logit difference with ``vs``) and the top-1 prediction after it."""
    import torch

    info = model.layer(job.layer)
    root = Path(job.folder)
    comps = np.asarray(job.components, np.float64)
    k, width = comps.shape
    signed = width == 2 * info.channels
    keys = ("ok", "maps", "peak", "peak_pos", "mass", "drop", "pdrop", "pair_drop", "after", "before")
    out = {n: [] for n in keys}
    for i, _, x in _inputs(model, root, job.images, out["ok"]):
        role = job.roles[i]
        with torch.no_grad(), model.probe([info.name]) as probe:
            logits = probe.run(x, stop=False)
            act = probe.activations[info.name][0]
        a = act.double().cpu().numpy()
        c, h, w = a.shape
        load = project(nonneg_matrix(a, signed)[0], comps)                          # (H*W, k)
        maps = load.T.reshape(k, h, w)
        flat = maps.reshape(k, -1)
        out["maps"].append(maps.astype(np.float16))
        out["peak"].append(flat.max(1).astype(np.float32))
        out["peak_pos"].append(flat.argmax(1))
        total = float(flat.sum())
        out["mass"].append((flat.sum(1) / total if total > 0 else np.zeros(k)).astype(np.float32))
        if role != 1:
            continue
        parts, _ = split_activations(a, maps, comps, signed)                  # (k, C, H, W)
        variants = act[None] - torch.as_tensor(parts, dtype=act.dtype, device=act.device)
        logits_after = run_batch(model, x, info.name, variants)                 # (k, K)
        s0 = float(scores_of(logits, [job.cls], "logprob")[0, 0])
        s = scores_of(logits_after, [job.cls], "logprob")[:, 0].double().cpu().numpy()
        out["drop"].append((s0 - s).astype(np.float32))
        out["pdrop"].append((np.exp(s0) - np.exp(s)).astype(np.float32))
        out["after"].append(logits_after.argmax(1).cpu().numpy())
        out["before"].append(int(logits.argmax(1)[0]))
        if job.vs is not None:
            d0 = float(logits[0, job.cls] - logits[0, job.vs])
            d = (logits_after[:, job.cls] - logits_after[:, job.vs]).double().cpu().numpy()
            out["pair_drop"].append((d0 - d).astype(np.float32))
    res = {"ok": np.asarray(out["ok"], np.int8)}
    n_ok = int(res["ok"].sum())
    shape = (0, k) if not n_ok else None
    for name, dtype in (("peak", np.float32), ("peak_pos", np.int64), ("mass", np.float32), ("drop", np.float32),
                        ("pdrop", np.float32), ("pair_drop", np.float32), ("after", np.int64)):
        res[name] = np.stack(out[name]).astype(dtype) if out[name] else np.zeros(shape or (0, k), dtype)
    res["before"] = np.asarray(out["before"], np.int64)
    res["maps"] = np.stack(out["maps"]) if out["maps"] else np.zeros((0, k, 1, 1), np.float16)
    return res
