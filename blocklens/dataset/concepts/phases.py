"""The phases of a class-concepts run, each a function with its own inputs and result: scan, factorize, measure, audit.

:func:`check_request` checks what is asked before any work (the app answers with it too); :func:`select_images`
picks the images to scan; :func:`scan` and :func:`measure` run their chunks through the job engine
(:func:`blocklens.jobs.run_shards`: shards in the store, resumable, on this process, local processes or Ray);
:func:`~.factor.factorize` fits the concepts in between; :func:`audit` turns the measurements into ranked, flagged
:class:`~.results.Concept` s; :func:`vocabulary` gives the pair's channels.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...analyses.common import spatial_layer
from ...errors import BlocklensError, CostError
from ...jobs import ChunkRunner
from ...recipes import concept_layer
from ..examples import patch_box
from ..folders import folder_key, folder_labels, json_key
from .chunks import MeasureChunk, ScanChunk, measure_chunk, scan_chunk
from .factor import Factors
from .results import Concept, ConceptExample
from .rules import (BORDER, CONCEPTS_DIR, CONCEPTS_VERSION, IMPORTANT, IMPORTANT_MIN, LOCATED_MIN, OTHER, SPREAD)

__all__ = ["Scan", "Measured", "check_request", "check_run", "select_images", "scan", "measure", "audit", "vocabulary"]


def check_request(model, layer: str | None, cls, vs=None) -> tuple[Any, int, int | None]:
    """``(layer info, class index, vs index)`` for a request, or one error saying what would be valid: a layer
    with positions and known classes (:func:`check_run` checks the rest once the folder is known)."""
    info = spatial_layer(model, layer or concept_layer(model), "class concepts")
    c_idx = model.class_index(cls)
    v_idx = model.class_index(vs) if vs is not None else None
    return info, c_idx, v_idx


def check_run(model, info, root, images: Sequence[str], c_idx: int, v_idx: int | None,
              k: int | None) -> tuple[np.ndarray | None, str]:
    """What a run checks before any work, its classes (``c_idx``, ``v_idx``) and layer (``info``) known: the
    second class is another one, ``k`` is possible at the layer, and a folder whose subfolders name classes has
    images of both. Returns :func:`~blocklens.dataset.folders.folder_labels` of ``images`` (the app checks a
    request with it too, so that it answers at once and starts nothing)."""
    if v_idx == c_idx:
        raise BlocklensError(f"the second class (--vs) names the same class as the first ({model.labels[c_idx]!r}); "
                             "give another class")
    if k is not None and not 1 <= int(k) <= info.channels:
        raise BlocklensError(f"k={k} is not possible at {info.name!r}: between 1 and its {info.channels} channels")
    labels, labels_from = folder_labels(model, images)
    for i, which in ((c_idx, ""), (v_idx, " (--vs)")):
        if labels is not None and i is not None and not (labels == i).any():
            found = sorted({model.labels[int(j)] for j in labels})
            raise BlocklensError(f"no images of class {model.labels[i]!r}{which} in {root}: its class subfolders "
                                 f"are {', '.join(found[:8])}{'...' if len(found) > 8 else ''}")
    return labels, labels_from


def select_images(model, root: Path, images: Sequence[str], labels: np.ndarray | None, c_idx: int,
                  v_idx: int | None, max_images: int, max_others: int, k: int | None) -> np.ndarray:
    """The positions in ``images`` to scan: with folder labels the class's images and up to ``max_others`` of the
    others (or of ``vs``), evenly spread; without, every image. Raises before any work when they are more than
    ``max_images``."""
    if labels is not None:  # both classes have images there (check_run)
        mine = np.nonzero(labels == c_idx)[0]
        rest = np.nonzero((labels == v_idx) if v_idx is not None else (labels != c_idx))[0]
        rest = rest[np.linspace(0, len(rest) - 1, min(len(rest), max_others)).round().astype(int)] if len(rest) else rest
        scan_ids = np.sort(np.concatenate([mine, rest]))
    else:
        scan_ids = np.arange(len(images))
    if len(scan_ids) > max_images:
        raise CostError(f"{len(scan_ids)} images to scan in {root} (the bound is max_images={max_images}: about "
                        f"{len(scan_ids) * (k or 6) + len(scan_ids)} passes); pass a larger max_images "
                        "(--max-images), or a folder with one subfolder per class so that only the class's images "
                        "are scanned")
    return scan_ids


@dataclass
class Scan:
    """The scan of ``images`` (relative paths; ``labels``: folder label or -1): per image ``ok`` and prediction
    (``pred``, -1 where unreadable), which are the class's (``is_cls``) and the others' (``is_other``; ``others``:
    the positions of those measured, at most ``max_others`` without folder labels); the
    class images' sampled ``rows`` and each row's image (``row_image``, a position in ``images``); ``signed``:
    the layer went below zero; ``pair``: the pair's per-image channel arrays (with ``vs``)."""

    key: str
    images: list[str]
    labels: list[int]
    ok: np.ndarray
    pred: np.ndarray
    is_cls: np.ndarray
    is_other: np.ndarray
    others: np.ndarray
    rows: np.ndarray
    row_image: np.ndarray
    signed: bool
    pair: dict | None

    @property
    def readable(self) -> np.ndarray:
        return np.nonzero(self.ok)[0]


def scan(engine: ChunkRunner, info, root: Path, images: list[str], labels: list[int], c_idx: int, v_idx: int | None,
         positions: int, seed: int, max_others: int, from_folders: bool) -> Scan:
    """Phase 1: scan every image (see the package docstring), then tell the class's images from the others'."""
    model = engine.model
    key = json_key([CONCEPTS_VERSION, model.fingerprint, info.name, folder_key(root, images), c_idx, v_idx, positions,
                    seed, labels, model.input_size, model.resize], compact=False)
    spans = engine.spans(len(images))
    scans = engine.run("scan", f"{CONCEPTS_DIR}/{key}/scan", [
        ScanChunk(folder=str(root), layer=info.name, cls=c_idx, vs=v_idx, images=images[a:b], classes=labels[a:b],
                  positions=positions, seed=seed) for a, b in spans],
        scan_chunk)
    ok = np.concatenate([sc["ok"] for sc in scans]).astype(bool)
    pred = np.full(len(images), -1, np.int64)
    pred[np.nonzero(ok)[0]] = np.concatenate([sc["pred"] for sc in scans])
    lab = np.asarray(labels)
    label_of = np.where(lab >= 0, lab, pred)
    is_cls = ok & (label_of == c_idx)
    is_other = ok & ((label_of == v_idx) if v_idx is not None else (label_of != c_idx))
    if not is_cls.any():
        readable = pred[ok]
        top = np.bincount(readable, minlength=len(model.labels)).argsort()[::-1][:3] if len(readable) else []
        raise BlocklensError(f"no image of {root} is predicted as {model.labels[c_idx]!r} ({ok.sum()} readable "
                             f"images; most predicted: {', '.join(model.labels[int(i)] for i in top)})")
    others = np.nonzero(is_other)[0]
    if not from_folders and len(others) > max_others:
        others = others[np.linspace(0, len(others) - 1, max_others).round().astype(int)]
    rows = np.concatenate([sc["rows"] for sc in scans])
    row_image = np.concatenate([sc["row_image"] + a for (a, _), sc in zip(spans, scans)])
    pair = ({name: np.concatenate([sc[name] for sc in scans]) for name in ("pair", "hi", "hi_pos", "lo", "lo_pos")}
            if v_idx is not None else None)
    return Scan(key=key, images=images, labels=labels, ok=ok, pred=pred, is_cls=is_cls, is_other=is_other,
                others=others, rows=rows, row_image=row_image, signed=any(bool(sc["neg"].any()) for sc in scans), pair=pair)


@dataclass
class Measured:
    """The measurement of the class's images (and the others'): ``class_paths`` (the class's readable images, in
    the order of every per-image array), ``maps`` ``(n, k, H, W)``, per concept ``peak`` / ``peak_pos`` /
    ``mass`` of the class's images (``other_peak`` of the others'), and the removals' ``drop`` (log-prob),
    ``pdrop`` (probability), ``after`` (top-1 after), ``before`` (top-1), ``pair_drop``."""

    class_paths: list[str]
    maps: np.ndarray
    peak: np.ndarray
    peak_pos: np.ndarray
    mass: np.ndarray
    other_peak: np.ndarray
    drop: np.ndarray
    pdrop: np.ndarray
    after: np.ndarray
    before: np.ndarray
    pair_drop: np.ndarray


def measure(engine: ChunkRunner, info, root: Path, sc: Scan, factors: Factors, c_idx: int, v_idx: int | None) -> Measured:
    """Phase 3: each image's concept maps and peaks, and on the class's images each concept's removal."""
    comps = factors.components
    measure_ids = np.sort(np.concatenate([np.nonzero(sc.is_cls)[0], sc.others]))
    roles = [1 if sc.is_cls[i] else 0 for i in measure_ids]
    mkey = hashlib.sha256(sc.key.encode() + comps.astype(np.float32).tobytes() + measure_ids.tobytes()).hexdigest()[:16]
    m_images = [sc.images[i] for i in measure_ids]
    measured = engine.run("measure", f"{CONCEPTS_DIR}/{sc.key}/{mkey}/measure", [
        MeasureChunk(folder=str(root), layer=info.name, cls=c_idx, vs=v_idx, images=m_images[a:b],
                     components=comps.astype(np.float32), roles=roles[a:b])
        for a, b in engine.spans(len(m_images))], measure_chunk)
    cat = {name: np.concatenate([m[name] for m in measured]) for name in measured[0] if name != "ok"}
    m_ok = np.concatenate([m["ok"] for m in measured]).astype(bool)
    m_roles = np.asarray(roles)[m_ok]
    m_paths = [p for p, good in zip(m_images, m_ok) if good]
    cls_rows, oth_rows = np.nonzero(m_roles == 1)[0], np.nonzero(m_roles == 0)[0]
    return Measured(class_paths=[m_paths[i] for i in cls_rows], maps=cat["maps"][cls_rows],
                    peak=cat["peak"][cls_rows], peak_pos=cat["peak_pos"][cls_rows], mass=cat["mass"][cls_rows],
                    other_peak=cat["peak"][oth_rows], drop=cat["drop"], pdrop=cat["pdrop"], after=cat["after"],
                    before=cat["before"], pair_drop=cat["pair_drop"])


def _where(centres: np.ndarray, frame: int, top: int) -> dict:
    """Where a concept's top patches sit: heat map of all peak centres, border share, centre and spread of the top."""
    top_c = centres[:top]
    middle = np.median(top_c, axis=0)
    spread = float(np.median(np.linalg.norm(top_c - middle, axis=1)))
    edge = np.minimum.reduce([top_c[:, 0], top_c[:, 1], frame - top_c[:, 0], frame - top_c[:, 1]])
    heat, _, _ = np.histogram2d(centres[:, 1], centres[:, 0], bins=8, range=[[0, frame], [0, frame]])
    band = BORDER * frame
    return {"heat": heat.astype(int).tolist(), "bins": 8, "frame": frame, "border": float((edge < band).mean()),
            "band": band, "centre": [float(middle[0]), float(middle[1])], "spread": spread, "top": len(top_c)}


def _concept(g: int, m: Measured, factors: Factors, info, c_idx: int, frame: int, rf: int, examples: int, crop_of,
             has_vs: bool) -> Concept:
    """Concept ``g``: its top patches, where they sit, its effect on the class, coverage and its peak elsewhere."""
    H, W = info.height, info.width
    pk = m.peak[:, g]
    order = np.argsort(-pk, kind="stable")
    exs, centres = [], []
    for rank, i in enumerate(order[:max(examples, 32)]):
        y, x = divmod(int(m.peak_pos[i, g]), W)
        centre = ((x + 0.5) * frame / W, (y + 0.5) * frame / H)
        centres.append(centre)
        if rank < examples:
            box = patch_box(y, x, (H, W), frame, rf)
            patch = np.asarray(crop_of(int(i)).crop(box).convert("RGB"))
            exs.append(ConceptExample(image=int(i), path=m.class_paths[i], y=y, x=x, value=float(pk[i]),
                                      centre=centre, box=box, patch=patch))
    predicted = m.before == c_idx
    flipped = int((predicted & (m.after[:, g] != c_idx)).sum())
    return Concept(index=g, direction=factors.directions[g], importance=float(m.pdrop[:, g].mean()),
                   importance_sd=float(m.pdrop[:, g].std()), flips=flipped / max(int(predicted.sum()), 1),
                   flipped=flipped, predicted=int(predicted.sum()),
                   coverage=float((m.mass[:, g] >= 1.0 / (2 * factors.k)).mean()),
                   other_ratio=(float(m.other_peak[:, g].mean() / max(pk.mean(), 1e-12)) if len(m.other_peak)
                                else None),
                   location=_where(np.asarray(centres), frame, examples), flags=[], examples=exs, maps=m.maps[:, g],
                   drops=m.pdrop[:, g].copy(), logprob_drop=float(m.drop[:, g].mean()),
                   logprob_drops=m.drop[:, g].copy(),
                   pair_drop=float(m.pair_drop[:, g].mean()) if has_vs and len(m.pair_drop) else None)


def _flag(concepts: list[Concept], frame: int, label: str, other_name: str) -> None:
    """Add each concept's flags: important and at one place, important and at the border, firing on others."""
    best = max(concepts[0].importance, 0.0)
    for c in concepts:
        important = c.importance >= max(IMPORTANT * best, IMPORTANT_MIN)
        loc = c.location
        located = important and loc["top"] >= LOCATED_MIN
        if located and loc["spread"] <= SPREAD * frame:
            c.flags.append(("fixed-location", f"important, and its top {loc['top']} patches are centred within "
                                              f"{loc['spread']:.0f} px (median) of ({loc['centre'][0]:.0f}, "
                                              f"{loc['centre'][1]:.0f}) in the {frame} px frame"))
        if located and loc["border"] >= 0.5:
            c.flags.append(("border", f"important, and {loc['border']:.0%} of its top {loc['top']} patches are "
                                      f"centred within {loc['band']:.0f} px of the frame's edge"))
        if c.other_ratio is not None and c.other_ratio >= OTHER:
            c.flags.append(("other-classes", f"its mean peak on {other_name} images is {c.other_ratio:.0%} of "
                                             f"its mean peak on {label} images"))


def audit(model, info, m: Measured, factors: Factors, c_idx: int, v_idx: int | None, rf: int, examples: int,
          crop_of) -> list[Concept]:
    """Phase 4: every concept with its patches, location, effect and flags, ranked by importance."""
    frame = model.input_size
    concepts = [_concept(g, m, factors, info, c_idx, frame, rf, examples, crop_of, v_idx is not None)
                for g in range(factors.k)]
    concepts.sort(key=lambda c: -c.importance)
    other_name = model.labels[v_idx] if v_idx is not None else "other classes'"
    _flag(concepts, frame, model.labels[c_idx], other_name)
    return concepts


def vocabulary(model, info, c_idx: int, v_idx: int, sc: Scan, root: Path, rf: int, examples: int,
               top: int = 8) -> dict:
    """The channels with the most evidence for one class over the other, averaged over the images of both, each
    with the patches where it carried the most evidence for its side (icons are added by the caller)."""
    readable = sc.readable
    rows = np.nonzero((sc.is_cls | sc.is_other)[readable])[0]          # rows (readable images) of either class
    paths = [sc.images[readable[r]] for r in rows]
    pair, hi, hi_pos, lo, lo_pos = (sc.pair[n] for n in ("pair", "hi", "hi_pos", "lo", "lo_pos"))
    mean = pair[rows].mean(0)
    S, H, W = model.input_size, info.height, info.width
    channels = []
    for side, chans in (("for", np.argsort(-mean)[:top]), ("against", np.argsort(mean)[:top])):
        for ch in chans:
            score = hi[rows, ch] if side == "for" else -lo[rows, ch]
            pos = hi_pos[rows, ch] if side == "for" else lo_pos[rows, ch]
            exs = []
            for j in np.argsort(-score, kind="stable")[:examples]:
                y, x = divmod(int(pos[j]), W)
                box = patch_box(y, x, (H, W), S, rf)
                crop = model.prepare(root / paths[j])[1]
                exs.append(ConceptExample(image=int(j), path=paths[j], y=y, x=x, value=float(score[j]),
                                          centre=((x + 0.5) * S / W, (y + 0.5) * S / H), box=box,
                                          patch=np.asarray(crop.crop(box).convert("RGB"))))
            channels.append({"channel": int(ch), "side": side, "evidence": float(mean[ch]), "examples": exs,
                             "icon": None, "key": ""})
    return {"a": c_idx, "b": v_idx, "a_label": model.labels[c_idx], "b_label": model.labels[v_idx],
            "images": len(rows), "score": "logit(a) - logit(b)", "method": "linear (sum over positions of A * d score "
            "/ dA), mean over the images of both classes; examples ranked by the channel's evidence for its side",
            "channels": channels}
