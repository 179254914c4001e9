"""``concept_dictionary``: one run over a folder, its phases in order, and the result assembled.

See the package docstring for the method; the phases are :mod:`.phases` (collect, train, remove: through the job
engine and the store), :mod:`.survey` and :mod:`.audit`. This module wires them and builds the atoms.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...iconcache import icons as get_icons
from ...jobs import Backend, ChunkRunner, Progress, driver_model
from ...optvis.targets import direction_target
from ...store import IconStore
from ..concepts.results import ConceptExample
from ..examples import patch_box
from ..folders import json_key
from ..index import folder_source
from .audit import add_sums, drives_of, firing, flags_of, location
from .codebook import Codebook
from .phases import Request, check_request, check_size, collect, remove, train
from .readability import dictionary_readability
from .results import Atom, ConceptDictionary
from .rules import DICTIONARY_VERSION
from .storage import save_dictionary
from .survey import Collected, Survey, survey

__all__ = ["concept_dictionary"]


def _codes_of(col: Collected, cb: Codebook, rids, device) -> dict[int, np.ndarray]:
    """Codes ``(H*W, K)`` of readable images ``rids``, read back from their shards (grouped by shard)."""
    import torch

    from .codebook import nonneg_rows

    out, t = {}, cb.tensors(device)
    for r in sorted(set(int(r) for r in rids), key=lambda r: int(col.shard_of[r])):
        rows = col.rows(int(col.shard_of[r]))[col.row0[r]:col.row0[r] + col.hw]
        x = nonneg_rows(torch.as_tensor(np.asarray(rows, np.float32), device=device), cb.signed)
        with torch.no_grad():
            out[r] = cb.encode(x, t).cpu().numpy()
    return out


def _atoms(model, info, root: Path, col: Collected, cb: Codebook, sv: Survey, fired: np.ndarray, drives: list,
           examples: int, rf: int) -> list[Atom]:
    """Every atom with its top patches (one per image, by peak), their maps, location, coverage and flags."""
    frame, (H, W) = model.input_size, (info.height, info.width)
    tops = {a: np.argsort(-sv.peak[:, a], kind="stable")[:examples] for a in range(cb.k)}
    codes = _codes_of(col, cb, [r for v in tops.values() for r in v], model.device)
    crops: dict[int, Any] = {}
    out = []
    for a in range(cb.k):
        exs, centres, maps = [], [], []
        for r in tops[a]:
            if sv.peak[r, a] <= 0:
                break
            y, x = divmod(int(sv.peak_pos[r, a]), W)
            box = patch_box(y, x, (H, W), frame, rf)
            if int(r) not in crops:
                crops[int(r)] = model.prepare(root / col.images[col.readable[r]])[1]
            centre = ((x + 0.5) * frame / W, (y + 0.5) * frame / H)
            centres.append(centre)
            exs.append(ConceptExample(image=int(r), path=col.images[col.readable[r]], y=y, x=x,
                                      value=float(sv.peak[r, a]), centre=centre, box=box,
                                      patch=np.asarray(crops[int(r)].crop(box).convert("RGB"))))
            maps.append(codes[int(r)][:, a].reshape(H, W).astype(np.float16))
        loc = location(np.asarray(centres).reshape(-1, 2), frame)
        fires = int(fired[:, a].sum())
        out.append(Atom(index=a, direction=cb.directions[a], vector=cb.atoms[a], examples=exs,
                        coverage=fires / max(len(fired), 1), fires=fires, drives=drives[a],
                        flags=flags_of(drives[a], loc, fires), location=loc,
                        maps=np.stack(maps) if maps else np.zeros((0, H, W), np.float16)))
    return out


def _add_icons(model, info, atoms: list[Atom], store, progress, recipe: dict) -> None:
    got = get_icons(model, [direction_target(model, info.name, a.direction) for a in atoms], store=store,
                    progress=progress, **recipe)
    for a, icon in zip(atoms, got):
        a.icon, a.key = icon, icon.key


def _quality(sv: Survey, extra: dict, req: Request, col: Collected) -> dict:
    q = dict(sv.quality)
    q["stability"] = extra["stability"]
    q["pca"]["stability"] = extra["pca_stability"]
    q["train_positions"] = extra["train_positions"]
    q["heldout_images"] = int(col.held.sum())
    q["note"] = ("explained variance of held-out positions (every 10th readable image) in the layer's non-negative "
                 "space; active: codes above 0.1% of the position's top code; dead: atoms never active on held-out "
                 "positions; stability: mean cosine of atoms matched one to one with a fit from seed + 1 (PCA: "
                 "|cosine| between PCAs of two halves of the training images)")
    return q


def concept_dictionary(model: Any, folder_or_index, layer: str | None = None, atoms: int | None = None,
                       method: str = "nmf", *, epochs: int | None = None, top: int | None = None, seed: int = 0,
                       stability: bool = True, examples: int = 8, icons: bool = True, readability: bool = False,
                       store: IconStore | str | os.PathLike | None = None, storage_options: dict | None = None,
                       chunk: int = 32, workers: int = 0, threads: int | None = None, device: str | None = None,
                       ray: str | None = None, gpus_per_task: float = 0, ray_init: dict | None = None,
                       loader: Callable[[], Any] | None = None, weights: str | os.PathLike | None = None,
                       progress: bool | None = None, log: Callable[[str], None] | None = None,
                       on_progress: Callable[[Progress], None] | None = None, **recipe) -> ConceptDictionary:
    """A dictionary of ``atoms`` concepts learned over every position of ``layer`` across a folder (or an index's
    folder), no labels needed; see the package docstring. ``method``: ``"nmf"`` (online NMF) or ``"sae"`` (a TopK
    sparse autoencoder, ``top`` codes per position; on the model's device, a GPU when it has one); ``epochs``:
    passes over the rows (default 4 for NMF, 30 for the SAE); ``stability``: fit a second time (seed + 1) to
    measure it; ``examples``: top patches per atom; ``icons``: each atom's direction rendered through the store
    (recipe options as :func:`blocklens.icons`); ``readability``: score the atoms and the layer's channels by
    two-alternative trials (:func:`~.readability.dictionary_readability`, into ``quality["readability"]``). ``workers`` / ``ray`` / ``gpus_per_task`` / ``ray_init``: where
    the collect and remove chunks run, as for :func:`blocklens.class_concepts`."""
    t0, times = time.perf_counter(), {}
    say = log or (lambda msg: None)
    backend = Backend(workers=workers, threads=threads, device=device, ray=ray, gpus_per_task=gpus_per_task,
                      ray_init=ray_init)
    model, spec, weights = driver_model(model, loader=loader, weights=weights, device=device, remote=backend.remote)
    req = check_request(model, layer, atoms, method, epochs, top, seed)
    info = req.info
    store = store if isinstance(store, IconStore) else IconStore(store, storage_options=storage_options)
    root, images, index = folder_source(folder_or_index, store)
    check_size(req, len(images) * info.height * info.width, f"in the {len(images)} image(s) of {root}")
    show = sys.stderr.isatty() if progress is None else progress
    runner = ChunkRunner(model=model, worker=backend.worker_ref(model, spec, weights, loader), backend=backend,
                         store=store, chunk=chunk, title="dictionary", show=show, on_progress=on_progress, say=say)
    say(f"dictionary of {req.atoms} atoms ({req.method}) at {info.name} of {model.name}: {len(images)} images of "
        f"{root}, chunks of {chunk} in {store.url}, on {backend.describe()}")
    col, fkey = collect(runner, info, root, images, model)
    times["collect"] = time.perf_counter() - t0
    key = json_key([DICTIONARY_VERSION, model.fingerprint, info.name, fkey, req.method, req.atoms, req.epochs,
                    req.top, req.seed, model.input_size, model.resize])
    if on_progress is not None:
        on_progress(Progress("train", 0, 1))
    cb, extra = train(req, col, store, key, model.device, stability, say)
    times["train"] = time.perf_counter() - t0 - sum(times.values())
    sv = survey(col, cb, model.device, extra["pca"], extra["pca_stability"],
                on_shard=(lambda d, n: on_progress(Progress("survey", d, n))) if on_progress else None)
    p99, fired, remove_lists = firing(sv.peak)
    times["survey"] = time.perf_counter() - t0 - sum(times.values())
    sums = add_sums(remove(runner, info, root, col, cb, key, remove_lists))
    drives, class_drops = drives_of(sums, model.labels)
    times["remove"] = time.perf_counter() - t0 - sum(times.values())
    known = index.manifest["layer_info"].get(info.name, {}).get("receptive_field") if index is not None else None
    rf = int(model.receptive_field(info.name, known=known)["size"])
    atom_list = _atoms(model, info, root, col, cb, sv, fired, drives, examples, rf)
    if icons:
        _add_icons(model, info, atom_list, store, progress, recipe)
    times["total"] = time.perf_counter() - t0
    paths = [col.images[i] for i in col.readable]
    result = ConceptDictionary(
        key=key, model=model.name, fingerprint=model.fingerprint, layer=info.name, folder=str(root), images=paths,
        method=req.method, atoms=atom_list, quality=_quality(sv, extra, req, col), codebook=cb,
        labels=list(model.labels), class_drops=class_drops,
        options={"atoms": req.atoms, "epochs": extra.get("epochs"), "batch": extra.get("batch"), "top": req.top if req.method == "sae" else None,
                 "seed": req.seed, "examples": examples, "receptive_field": rf, "index": index.key if index is not None else None,
                 "fire": "peak >= 25% of the atom's 99th-percentile peak", "p99": [round(float(v), 5) for v in p99],
                 "predictions": {"pred": col.pred.tolist(), "prob": [round(float(p), 4) for p in col.prob]}},
        timings={k: round(v, 3) for k, v in times.items()},
        tables={"peak": sv.peak, "peak_pos": sv.peak_pos, "ch_peak": sv.ch_peak, "ch_pos": sv.ch_pos, "low": sv.low,
                "low_pos": sv.low_pos, "ch_low": sv.ch_low, "ch_low_pos": sv.ch_low_pos},
        crops=lambda i: model.prepare(root / paths[i])[1])
    if readability:
        if on_progress is not None:
            on_progress(Progress("readability", 0, 1))
        t1 = time.perf_counter()
        dictionary_readability(result, model)
        result.timings["readability"] = round(time.perf_counter() - t1, 3)
        result.timings["total"] = round(time.perf_counter() - t0, 3)
    save_dictionary(result, store)
    return result
