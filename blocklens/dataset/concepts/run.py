"""``class_concepts``: one run over a folder, its phases in order (scan, factorize, measure, audit) and the result.

See the package docstring for the method; each phase is a function of :mod:`.phases` (and :mod:`.factor`), and
this module only checks the request, wires the phases to the job engine and assembles :class:`~.results.ClassConcepts`
by keyword.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import numpy as np

from ...errors import BlocklensError
from ...iconcache import icons as get_icons
from ...jobs import Backend, ChunkRunner, Progress, driver_model
from ...optvis.targets import direction_target
from ...store import IconStore
from ..index import folder_source
from .factor import factorize
from .phases import Measured, Scan, audit, check_request, check_run, measure, scan, select_images, vocabulary
from .results import ClassConcepts, Concept

__all__ = ["class_concepts"]


def _icon_progress(recipe: dict, on_progress) -> dict:
    """``recipe`` whose ``on_batch`` also tells ``on_progress`` of the icon renders: its first call is the concepts'
    icons, its second the vocabulary's."""
    if on_progress is None:
        return recipe
    user, calls = recipe.get("on_batch"), []

    def on_batch(done: int, total: int) -> None:
        if done == 0:
            calls.append(1)
        on_progress(Progress("icons" if len(calls) <= 1 else "vocabulary icons", done, total))
        if user is not None:
            user(done, total)

    return {**recipe, "on_batch": on_batch}


def _add_icons(model, info, concepts: list[Concept], voc: dict | None, store, progress, recipe: dict) -> None:
    """Each concept's direction and each vocabulary channel rendered through the store."""
    got = get_icons(model, [direction_target(model, info.name, c.direction) for c in concepts], store=store,
                    progress=progress, **recipe)
    for c, icon in zip(concepts, got):
        c.icon, c.key = icon, icon.key
    if voc is not None:
        got = get_icons(model, info.name, [c["channel"] for c in voc["channels"]], store=store, progress=progress,
                        **recipe)
        for c, icon in zip(voc["channels"], got):
            c["icon"], c["key"] = icon, icon.key


def _check_counts(**counts: tuple[int, int]) -> None:
    for name, (v, low) in counts.items():
        if v < low:
            raise BlocklensError(f"{name} must be at least {low}, got {v}")


def class_concepts(model: Any, folder_or_index, cls, layer: str | None = None, k: int | None = None, *,
                   vs=None, store: IconStore | str | os.PathLike | None = None, storage_options: dict | None = None,
                   icons: bool = True, positions: int = 16, max_images: int = 1000, max_others: int = 200,
                   max_rows: int = 40_000, examples: int = 8, chunk: int = 16, seed: int = 0, workers: int = 0,
                   threads: int | None = None, device: str | None = None, ray: str | None = None,
                   gpus_per_task: float = 0, ray_init: dict | None = None, loader: Callable[[], Any] | None = None,
                   weights: str | os.PathLike | None = None, progress: bool | None = None,
                   log: Callable[[str], None] | None = None,
                   on_progress: Callable[[Progress], None] | None = None, **recipe) -> ClassConcepts:
    """The concepts the model relies on for ``cls`` at ``layer`` over a folder (or an index's folder); see the
    package docstring for the method. ``k``: the number of concepts (default: chosen by reconstruction and
    stability); ``vs``: a second class, for the pair's vocabulary and each concept's effect on the pair;
    ``positions``: rows sampled per class image for the factorization (at most ``max_rows`` in all);
    ``max_images``: the bound on images scanned (an error, before any work, when the folder needs more);
    ``max_others``: images of other classes measured for the audit; ``examples``: top patches per concept;
    ``icons``: each concept's direction rendered through the store (recipe options as :func:`blocklens.icons`).
    ``workers``: local processes for the chunks (0: this process); ``ray``, ``gpus_per_task``, ``ray_init``: Ray
    tasks instead, as for :func:`blocklens.precompute.precompute`. ``on_progress(Progress)``: each phase's
    progress (``scan``, ``factorize``, ``measure``, ``icons``, ``vocabulary icons``), chunks found in the store
    counted as done."""
    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    _check_counts(positions=(positions, 1), max_images=(max_images, 1), max_others=(max_others, 0),
                  examples=(examples, 1), chunk=(chunk, 1))
    backend = Backend(workers=workers, threads=threads, device=device, ray=ray, gpus_per_task=gpus_per_task,
                      ray_init=ray_init)
    model, spec, weights = driver_model(model, loader=loader, weights=weights, device=device, remote=backend.remote)
    info, c_idx, v_idx = check_request(model, layer, cls, vs)
    store = store if isinstance(store, IconStore) else IconStore(store, storage_options=storage_options)
    root, images, index = folder_source(folder_or_index, store)
    labels, labels_from = check_run(model, info, root, images, c_idx, v_idx, k)
    scan_ids = select_images(model, root, images, labels, c_idx, v_idx, max_images, max_others, k)
    scan_images = [images[i] for i in scan_ids]
    scan_labels = [int(labels[i]) if labels is not None else -1 for i in scan_ids]
    show = sys.stderr.isatty() if progress is None else progress
    engine = ChunkRunner(model=model, worker=backend.worker_ref(model, spec, weights, loader), backend=backend,
                         store=store, chunk=chunk, title="concepts", show=show, on_progress=on_progress, say=say)
    say(f"concepts of {model.labels[c_idx]!r} at {info.name} of {model.name}: {len(scan_images)} images of {root} "
        f"to scan (labels from {labels_from}), chunks of {chunk} in {store.url}, on {backend.describe()}")
    times = {}
    sc = scan(engine, info, root, scan_images, scan_labels, c_idx, v_idx, positions, seed, max_others,
              labels is not None)
    times["scan"] = time.perf_counter() - t0
    if on_progress is not None:
        on_progress(Progress("factorize", 0, 0, elapsed=times["scan"]))
    keep = np.isin(sc.row_image, np.nonzero(sc.is_cls)[0])
    factors = factorize(sc.rows[keep], sc.row_image[keep], sc.signed, info.channels, k, max_rows, seed)
    times["factorize"] = time.perf_counter() - t0 - times["scan"]
    t1 = time.perf_counter()
    m = measure(engine, info, root, sc, factors, c_idx, v_idx)
    times["measure"] = time.perf_counter() - t1
    known = index.manifest["layer_info"].get(info.name, {}).get("receptive_field") if index is not None else None
    rf = int(model.receptive_field(info.name, known=known)["size"])

    def crop_of(i: int):
        return model.prepare(root / m.class_paths[i])[1]

    concepts = audit(model, info, m, factors, c_idx, v_idx, rf, examples, crop_of)
    voc = vocabulary(model, info, c_idx, v_idx, sc, root, rf, examples) if v_idx is not None else None
    if icons:
        _add_icons(model, info, concepts, voc, store, progress, _icon_progress(recipe, on_progress))
    times["total"] = time.perf_counter() - t0
    return _assemble(model, info, c_idx, v_idx, root, labels_from, sc, factors, m, concepts, voc, crop_of, times,
                     dict(positions=positions, seed=seed, examples=examples, max_rows=max_rows,
                          index=index.key if index is not None else None))


def _assemble(model, info, c_idx, v_idx, root, labels_from, sc: Scan, factors, m: Measured, concepts, voc, crop_of,
              times: dict, options: dict) -> ClassConcepts:
    """The result, built by keyword."""
    n_cls = int(sc.is_cls.sum())
    sample = {"rows": factors.rows, "columns": factors.columns, "per_image": options["positions"], "images": n_cls,
              "weighting": "evidence for the class (positive part) + 1% of its mean", "signed": factors.signed,
              "relative_error": round(factors.relative_error, 4)}
    method = (f"NMF (k={factors.k}) of {sample['rows']} sampled positions of {n_cls} {model.labels[c_idx]} images "
              f"at {info.name}{' ([relu(A), relu(-A)])' if factors.signed else ''}; importance: mean drop of the "
              "class's probability when a concept's share of the activations is removed (its log-probability drop "
              "is given too); flips: share of correctly predicted images whose top-1 changes")
    other_name = model.labels[v_idx] if v_idx is not None else "other classes'"
    return ClassConcepts(
        model=model.name, layer=info.name, cls=c_idx, label=model.labels[c_idx], folder=str(root),
        images=m.class_paths, labels_from=labels_from, k=factors.k, k_selection=factors.k_selection, sample=sample,
        method=method, concepts=concepts, vs=v_idx, vs_label=model.labels[v_idx] if v_idx is not None else None,
        vocabulary=voc, others={"count": int(len(m.other_peak)), "label": other_name},
        options={"positions": options["positions"], "seed": options["seed"], "examples": options["examples"],
                 "max_rows": options["max_rows"], "key": sc.key, "index": options["index"]},
        crops=crop_of, timings={k_: round(v, 3) for k_, v in times.items()}, components=factors.components)
