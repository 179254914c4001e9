"""The phases of a dictionary run that touch the store: the request checked, collect, train, remove.

Collect and remove run their chunks through the job engine (:class:`~blocklens.jobs.ChunkRunner`: shards in the
store, resumable, on this process, local processes or Ray); training keeps its codebook in the store, so a stopped
run resumes after its last finished phase. The survey and the audit are :mod:`.survey` and :mod:`.audit`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...analyses.common import spatial_layer
from ...errors import BlocklensError
from ...jobs import ChunkRunner, npz_bytes, npz_load
from ...recipes import concept_layer
from ...store import IconStore
from ..folders import folder_key, json_key
from .chunks import CollectChunk, RemoveChunk, collect_chunk, remove_chunk
from .codebook import Codebook
from .survey import Collected
from .train import Rows, fit_nmf, fit_sae, matched_cosine, pca_basis
from .rules import DEFAULT_ATOMS, DICTIONARY_DIR, DICTIONARY_VERSION, METHODS

__all__ = ["Request", "check_request", "collect", "train", "remove"]

#: Mini-batch updates a fit makes at least (more passes over a small folder), and the passes it makes at least.
STEPS = {"nmf": 200, "sae": 3000}
EPOCHS = {"nmf": 4, "sae": 10}


def plan_training(method: str, rows: int, epochs: int | None) -> tuple[int, int]:
    """``(batch, epochs)`` for ``rows`` training rows: batches of rows/8 (NMF) or rows/32 (SAE) within bounds, and
    enough passes for :data:`STEPS` updates (at least :data:`EPOCHS`) unless ``epochs`` is given."""
    batch = int(np.clip(rows // (8 if method == "nmf" else 32), 64, 2048))
    if epochs is not None:
        return batch, int(epochs)
    per_epoch = max(1, -(-rows // batch))
    return batch, max(EPOCHS[method], -(-STEPS[method] // per_epoch))


@dataclass
class Request:
    """What a run was asked, checked: the layer, atoms, method, epochs (None: by :func:`plan_training`), ``top``
    (SAE codes per row), seed."""

    info: Any
    atoms: int
    method: str
    epochs: int | None
    top: int
    seed: int


def check_request(model, layer: str | None, atoms: int | None, method: str, epochs: int | None, top: int | None,
                  seed: int) -> Request:
    """The request checked before any work: a layer with positions, a known method, a possible number of atoms."""
    info = spatial_layer(model, layer or concept_layer(model), "a concept dictionary")
    if method not in METHODS:
        raise BlocklensError(f"unknown method {method!r}: one of {', '.join(METHODS)}")
    k = DEFAULT_ATOMS if atoms is None else int(atoms)
    if k < 1:
        raise BlocklensError(f"atoms must be at least 1, got {k}")
    top = max(1, k // 8) if top is None else int(top)
    if method == "sae" and not 1 <= top <= k:
        raise BlocklensError(f"top={top} (non-zero codes per position) must be between 1 and the {k} atoms")
    if epochs is not None and epochs < 1:
        raise BlocklensError(f"epochs must be at least 1, got {epochs}")
    return Request(info=info, atoms=k, method=method, epochs=epochs, top=top, seed=int(seed))


def check_size(req: Request, positions: int, where: str) -> None:
    """More atoms than the training positions (or, for NMF, than the non-negative columns) is an error."""
    if req.atoms > positions:
        raise BlocklensError(f"{req.atoms} atoms is more than the {positions} positions {where} at "
                             f"{req.info.name!r} ({req.info.height}x{req.info.width} per image); ask for fewer atoms "
                             "or give more images")


def collect(runner: ChunkRunner, info, root: Path, images: list[str], model) -> tuple[Collected, str]:
    """Phase 1: every position's activations and each image's prediction, chunk by chunk, into the store."""
    fkey = folder_key(root, images)
    ckey = json_key([DICTIONARY_VERSION, model.fingerprint, info.name, fkey, model.input_size, model.resize])
    spans = runner.spans(len(images))
    shards = runner.compute("collect", f"{DICTIONARY_DIR}/rows/{ckey}", [
        CollectChunk(folder=str(root), layer=info.name, images=images[a:b]) for a, b in spans], collect_chunk)
    metas = []
    for s in shards:
        got = npz_load(runner.store.files.read(s.path))
        metas.append({k: got[k] for k in ("ok", "pred", "prob", "neg")})
    col = Collected(runner.store, [s.path for s in shards], metas, images, spans, info.height * info.width)
    if not len(col.readable):
        raise BlocklensError(f"no readable image in {root}: all {len(images)} image file(s) failed to decode")
    if len(col.readable) < 2:
        raise BlocklensError(f"a concept dictionary needs at least 2 readable images (one is held out to measure it); "
                             f"{root} has {len(col.readable)} of {len(images)}")
    return col, fkey


def _fit(req: Request, rows: Rows, channels: int, seed: int, epochs: int, say) -> Codebook:
    def on_epoch(e: int, err: float) -> None:
        if e + 1 == epochs or (e + 1) % max(1, epochs // 5) == 0:
            say(f"dictionary: {req.method} seed {seed} epoch {e + 1}/{epochs}: relative squared error {err:.4f}")

    if req.method == "nmf":
        return fit_nmf(rows, req.atoms, channels, epochs, seed, on_epoch=on_epoch)
    return fit_sae(rows, req.atoms, channels, epochs, seed, req.top, on_epoch=on_epoch)


def train(req: Request, col: Collected, store: IconStore, key: str, device, stability: bool,
          say: Callable[[str], None]) -> tuple[Codebook, dict]:
    """Phase 2: the codebook (from the store when this run's was trained before), the PCA baseline and the
    stability figures (a second fit with ``seed + 1``, PCAs of two halves of the images)."""
    shards = sorted(set(col.shard_of[~col.held].tolist()))
    rows = Rows(shards, col.rows, col.train_mask, col.signed, device)
    check_size(req, rows.count(), "of the training images")
    rows.batch, epochs = plan_training(req.method, rows.count(), req.epochs)
    if req.method == "nmf" and req.atoms > req.info.channels * (2 if col.signed else 1):
        raise BlocklensError(f"NMF needs at most as many atoms as the layer's non-negative columns "
                             f"({req.info.channels * (2 if col.signed else 1)} at {req.info.name!r}); ask for fewer "
                             "atoms, or method='sae' for an overcomplete dictionary")
    path = f"{DICTIONARY_DIR}/{key}/codebook.npz"
    got = store.files.read(path)
    if got is not None:
        stored = npz_load(got)
        cb = Codebook.from_arrays({k[5:]: v for k, v in stored.items() if k.startswith("main_")})
        extra = {"stability": float(stored["stability"]) if "stability" in stored else None}
    else:
        cb = _fit(req, rows, req.info.channels, req.seed, epochs, say)
        extra = {"stability": None}
        if stability:
            again = _fit(req, rows, req.info.channels, req.seed + 1, epochs, say)
            extra["stability"] = matched_cosine(cb.atoms, again.atoms)
        arrays = {"main_" + k: v for k, v in cb.arrays().items()}
        if extra["stability"] is not None:
            arrays["stability"] = np.float64(extra["stability"])
        store.files.write(path, npz_bytes(arrays))
    k = min(req.atoms, cb.atoms.shape[1])
    mean, basis = pca_basis(rows, k)
    halves = [Rows(shards[h::2], col.rows, col.train_mask, col.signed, device) for h in (0, 1)]
    pca_stab = (matched_cosine(pca_basis(halves[0], k)[1].cpu().numpy(), pca_basis(halves[1], k)[1].cpu().numpy(),
                               absolute=True) if len(shards) > 1 and stability else None)
    extra["pca"] = (mean, basis)
    extra["pca_stability"] = pca_stab
    extra["train_positions"] = rows.count()
    extra["epochs"], extra["batch"] = epochs, rows.batch
    return cb, extra


def remove(runner: ChunkRunner, info, root: Path, col: Collected, cb: Codebook, key: str,
           remove_lists: list[list[int]]) -> list[dict]:
    """Phase 4: each image's firing atoms removed, the rest of the network run (chunks through the engine)."""
    rel = [col.images[i] for i in col.readable]
    spans = runner.spans(len(rel))
    shards = runner.compute("remove", f"{DICTIONARY_DIR}/{key}/remove", [
        RemoveChunk(folder=str(root), layer=info.name, images=rel[a:b], remove=remove_lists[a:b], codebook=cb)
        for a, b in spans], remove_chunk)
    out = []
    for (a, _), s in zip(spans, shards):
        got = npz_load(runner.store.files.read(s.path))
        got["pair_image"] = got["pair_image"] + a
        out.append(got)
    return out
