"""The work of a dictionary on the workers: one chunk of images collected, or its atoms removed.

:func:`collect_chunk` and :func:`remove_chunk` are the tasks that :func:`blocklens.jobs.run_shards` runs (in this
process, local processes or Ray tasks) on the payloads :class:`CollectChunk` and :class:`RemoveChunk`; each returns
the arrays of one shard.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...analyses.interventions import run_batch
from ..pipeline import input_batches
from .codebook import Codebook

__all__ = ["CollectChunk", "RemoveChunk", "collect_chunk", "remove_chunk"]


@dataclass
class CollectChunk:
    """One chunk to collect (picklable): every position's activations at ``layer`` and each image's prediction."""

    folder: str
    layer: str
    images: list[str]
    batch: int = 16


@dataclass
class RemoveChunk:
    """One chunk whose atoms are removed (picklable): ``remove[i]`` the atoms to remove on image ``i``."""

    folder: str
    layer: str
    images: list[str]
    remove: list[list[int]]
    codebook: Codebook


def collect_chunk(model, job: CollectChunk, store=None) -> dict[str, np.ndarray]:
    """``ok`` per image; per readable image ``pred`` and ``prob`` (top-1) and its ``H*W`` rows (``rows``,
    float16, ``(n*H*W, C)``, position-major); ``neg``: the layer went below zero."""
    import torch

    info = model.layer(job.layer)
    ok, pred, prob, rows, neg = [], [], [], [], False
    for b in input_batches(model, Path(job.folder), job.images, range(len(job.images)), batch=job.batch):
        ok.extend([0] * len(b.skipped))
        if b.x is None:
            continue
        ok.extend([1] * len(b.ids))
        with torch.no_grad(), model.probe([info.name]) as probe:
            logits = probe.run(b.x, stop=False)
            act = probe.activations[info.name].float()                   # (B, C, H, W)
        p = logits.float().softmax(-1)
        pred.append(p.argmax(1).cpu().numpy())
        prob.append(p.max(1).values.cpu().numpy())
        neg = neg or bool((act < 0).any())
        rows.append(act.flatten(2).transpose(1, 2).reshape(-1, act.shape[1]).half().cpu().numpy())
    c = info.channels
    return {"ok": np.asarray(ok, np.int8), "pred": np.concatenate(pred).astype(np.int64) if pred else np.zeros(0, np.int64),
            "prob": np.concatenate(prob).astype(np.float32) if prob else np.zeros(0, np.float32),
            "rows": np.concatenate(rows) if rows else np.zeros((0, c), np.float16), "neg": np.bool_(neg)}


def remove_chunk(model, job: RemoveChunk, store=None) -> dict[str, np.ndarray]:
    """Each listed atom's share removed from its image, the rest of the network run: per atom the sums over the
    chunk's images of every class's logit, log-probability and probability drop (``logit``, ``logprob``,
    ``prob``, ``(K, classes)``), of the positive log-probability drops (``pos``) and of those on images not
    predicted as the class (``pos_other``) and the probability drops there (``prob_other``), the count of removals (``n``); per removal ``pair_image`` (in the
    chunk), ``pair_atom``, ``before`` and ``after`` (top-1)."""
    import torch

    info = model.layer(job.layer)
    cb = job.codebook
    k = cb.k
    sums = None
    pairs = {n: [] for n in ("pair_image", "pair_atom", "before", "after")}
    t = None
    for b in input_batches(model, Path(job.folder), job.images, range(len(job.images)), batch=1):
        if b.x is None:
            continue
        i = b.ids[0]
        atoms = list(job.remove[i])
        if not atoms:
            continue
        with torch.no_grad(), model.probe([info.name]) as probe:
            logits = probe.run(b.x, stop=False).float()
            act = probe.activations[info.name][0]
        t = t or cb.tensors(act.device)
        with torch.no_grad():
            codes = cb.encode_acts(act, t)
            variants = act[None] - cb.shares(act, codes, atoms, t)
        after = run_batch(model, b.x, info.name, variants).float()                # (n, classes)
        if sums is None:
            sums = {n: np.zeros((k, after.shape[1])) for n in ("logit", "logprob", "prob", "pos", "pos_other", "prob_other")}
            sums["n"] = np.zeros(k, np.int64)
        lp0, lp1 = logits.log_softmax(-1), after.log_softmax(-1)
        d_logit = (logits - after).double().cpu().numpy()
        d_lp = (lp0 - lp1).double().cpu().numpy()
        d_p = (lp0.exp() - lp1.exp()).double().cpu().numpy()
        top = int(logits.argmax(1)[0])
        for r, a in enumerate(atoms):
            sums["logit"][a] += d_logit[r]
            sums["logprob"][a] += d_lp[r]
            sums["prob"][a] += d_p[r]
            pos = np.maximum(d_lp[r], 0)
            sums["pos"][a] += pos
            other = pos.copy()
            other[top] = 0
            sums["pos_other"][a] += other
            p_other = d_p[r].copy()
            p_other[top] = 0
            sums["prob_other"][a] += p_other
            sums["n"][a] += 1
        pairs["pair_image"] += [i] * len(atoms)
        pairs["pair_atom"] += atoms
        pairs["before"] += [top] * len(atoms)
        pairs["after"] += after.argmax(1).cpu().tolist()
    out = {n: np.asarray(v, np.int64) for n, v in pairs.items()}
    if sums is None:  # nothing to remove in this chunk
        sums = {n: np.zeros((k, len(model.labels))) for n in ("logit", "logprob", "prob", "pos", "pos_other",
                                                              "prob_other")}
        sums["n"] = np.zeros(k, np.int64)
    out.update(sums)
    return out
