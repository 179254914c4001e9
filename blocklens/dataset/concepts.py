"""Class concepts: what a model relies on for one class across a folder, found by factorization, measured by removal.

``class_concepts(model, "photos/", "malamute")`` takes the images of the class (a folder with one subfolder per
class, the ImageFolder convention, gives labels; otherwise the model's top-1 prediction does) and:

1. *Scan* (one forward and backward pass per image): the activations ``A`` at the layer, the class's
   log-probability ``s`` and its gradient. From each class image, ``positions`` rows of the non-negative matrix
   (``[relu(A), relu(-A)]`` for a signed layer) are sampled, without replacement, with probability proportional to
   the position's evidence for the class ``max(0, sum_c A * ds/dA) + 0.01 mean |evidence|`` (so the positions the
   class's score rests on are sampled most, and every position can be). The sample's size is stated in the result.
2. *Factorize* the sample with NMF (:func:`~blocklens.analyses.factorize.nmf_matrix`) into ``k`` concepts: each a
   non-negative pattern over channels, its signed fold a direction in the layer's channel space. Without ``k``,
   every ``k`` in ``2..8`` is fitted on the whole sample and on three random 80% of the images; the chosen ``k``
   is the largest whose every concept reappears on the resamples (mean best cosine >= 0.85), so that each concept
   is a property of the class's images rather than of a few of them (the table, with each ``k``'s relative
   reconstruction error, is in ``k_selection``).
3. *Measure* (per image, ``k + 1`` passes from the layer on): each image's concept maps (the non-negative
   loadings of every position on the fixed concepts) and each concept's exact share of the activations
   (:func:`~blocklens.analyses.factorize.split_activations`); the share is removed and the rest of the network
   run. **Importance** = the mean drop of the class's probability over the class's images (the mean drop of its
   log-probability is given too: it is unbounded, so a concept whose removal wrecks a few images can lead it while
   flipping few); **flips** = the share of the class's images predicted as the class whose top-1 prediction
   changes when the concept is removed. Concepts are ranked by importance.

Each concept then has its top dataset patches (per image its peak position, boxes ``(x0, y0, x1, y1)`` in the
model's input frame at the layer's receptive field), its maps over those images, and an audit of where it sits: a
heat map of its peaks' centres over the input frame, the share of its top patches within a border band, how much of
the class it covers, and how strongly it fires on images of other classes. Flags name what was measured.

With ``vs`` (a second class), also the *vocabulary* of the pair over the images of both classes: the channels with
the most evidence for one over the other (linear attribution of ``logit(a) - logit(b)``, averaged over the images
of both), each with the patches where it carried the most evidence for its side (ranked by attribution, not by
activation: "relevance maximization").

Work is split in chunks of images, each kept as a shard in the store (``concepts/<key>/...``): a run that is
stopped resumes; ``workers`` runs chunks on local processes (as the index).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..analyses.common import spatial_layer, to_jsonable
from ..analyses.factorize import fold, nmf_matrix, nonneg_matrix, project, split_activations
from ..analyses.interventions import run_batch, scores_of
from ..errors import BlocklensError, CostError, ImageError
from ..iconcache import icons as get_icons
from ..images import png_data_uri
from ..jobs import Progress, Tracker, default_threads, describe_error, driver_model, parent_alive, run_jobs, use_threads, worker_model
from ..optvis.targets import direction_target
from ..recipes import default_layers
from ..store import IconStore
from ..web.report import concepts_html
from .examples import patch_box
from .index import (ActivationIndex, folder_images, folder_key, load_index, npz_bytes, npz_load, prepared,
                    receptive_field)

__all__ = ["ClassConcepts", "Concept", "ConceptExample", "class_concepts", "folder_labels", "CONCEPTS_VERSION"]

#: Bumped whenever what a shard holds or how it is computed changes.
CONCEPTS_VERSION = 1
CONCEPTS_DIR = "concepts"
KS = tuple(range(2, 9))           # the k tried when none is given
FLOOR = 0.01                      # every position keeps this share of the mean |evidence| as its sampling weight
STABLE = 0.85                     # a k counts as stable when each concept reappears (cosine) on resampled images
BORDER = 0.125                    # the border band: this fraction of the input's side from any edge
SPREAD = 0.1                      # a concept's top patches "sit at one place" within this fraction of the side
OTHER = 0.8                       # peak on other classes / peak on the class at or above this: "fires on others"
K_RULE = (f"the largest k (of {KS[0]}..{KS[-1]}) whose every concept reappears (mean best cosine >= {STABLE}) in "
          "the concepts fitted on three random 80% of the images")
IMPORTANT = 0.5                   # importance at or above this share of the top concept's, and
IMPORTANT_MIN = 0.05              # at least this mean probability drop: "important"
LOCATED_MIN = 4                   # the location flags need at least this many top patches (images) to say anything


# ---------------------------------------------------------------------------------------------- results


@dataclass
class ConceptExample:
    """One patch: ``image`` (position in the result's ``images``), ``path`` (relative to the folder), ``y``/``x`` on
    the layer's grid, ``value`` (the concept's loading there, or a channel's evidence), ``centre`` (x, y): that
    position's centre in the model's input frame, ``box`` ``(x0, y0, x1, y1)``: the receptive field around it in
    the input frame (shifted to lie inside it: near an edge the box is not centred on ``centre``), ``patch``
    (H, W, 3) uint8, the box's pixels."""

    image: int
    path: str
    y: int
    x: int
    value: float
    centre: tuple[float, float]
    box: tuple[int, int, int, int]
    patch: np.ndarray = field(repr=False)

    def to_json(self, size: int | None = 64) -> dict:
        d = {"image": self.image, "path": self.path, "y": self.y, "x": self.x, "value": to_jsonable(self.value),
             "centre": list(self.centre), "box": list(self.box)}
        if size:
            d["src"] = png_data_uri(Image.fromarray(self.patch).resize((size, size), Image.BILINEAR), "JPEG",
                                    quality=88)
        return d


@dataclass
class Concept:
    """One concept of a class: ``direction`` (C,) in the layer's channel space, ``importance`` (mean drop of the
    class's probability when its share is removed; ``importance_sd`` over images; ``logprob_drop`` the mean drop of
    its log-probability, ``drops`` / ``logprob_drops`` per class image), ``flips`` (share of the
    class's correctly predicted images whose prediction changes; ``flipped`` of ``predicted``), ``coverage``
    (share of the class's images where it holds at least 1/(2k) of the concept mass), ``other_ratio`` (its mean
    peak on other classes' images over its mean peak on the class's, or None), ``location`` (``heat``: counts of
    peak centres on a grid over the input frame, ``border``: share of the top patches within the border band,
    ``centre`` and ``spread`` in input pixels), ``flags`` (code, text), ``examples`` (its top patches),
    ``maps`` (images, H, W): its loading at each position of each class image."""

    index: int
    direction: np.ndarray = field(repr=False)
    importance: float
    importance_sd: float
    flips: float
    flipped: int
    predicted: int
    coverage: float
    other_ratio: float | None
    location: dict
    flags: list[tuple[str, str]]
    examples: list[ConceptExample]
    maps: np.ndarray = field(repr=False)
    drops: np.ndarray = field(default=None, repr=False)  # (images,) the probability drop on each class image
    logprob_drop: float = 0.0
    logprob_drops: np.ndarray = field(default=None, repr=False)  # (images,) the log-probability drop on each
    pair_drop: float | None = None
    icon: Any = None
    key: str = ""

    def to_json(self, size: int | None = 64, maps: int = 8) -> dict:
        top = [e.image for e in self.examples[:maps]]
        return {"index": self.index, "importance": self.importance, "importance_sd": self.importance_sd,
                "logprob_drop": self.logprob_drop,
                "flips": self.flips, "flipped": self.flipped, "predicted": self.predicted,
                "coverage": self.coverage, "other_ratio": self.other_ratio, "location": to_jsonable(self.location),
                "flags": [{"code": c, "text": t} for c, t in self.flags], "pair_drop": self.pair_drop,
                "key": self.key, "examples": [e.to_json(size) for e in self.examples],
                "maps": {str(i): to_jsonable(np.round(self.maps[i].astype(np.float32), 4)) for i in top},
                "direction": to_jsonable(np.round(self.direction.astype(np.float32), 5))}


@dataclass
class ClassConcepts:
    """The concepts of one class at one layer over a folder (see the module docstring); ``concepts`` ranked by
    importance. ``images``: the class's images (relative paths) in the order of the maps; ``labels_from``: how
    they were chosen (``"folders"`` or ``"predictions"``); ``vocabulary``: the channels of the pair with ``vs``."""

    model: str
    layer: str
    cls: int
    label: str
    folder: str
    images: list[str]
    labels_from: str
    k: int
    k_selection: list[dict]
    sample: dict
    method: str
    concepts: list[Concept]
    vs: int | None = None
    vs_label: str | None = None
    vocabulary: dict | None = None
    others: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    crops: Callable[[int], Image.Image] | None = field(default=None, repr=False)  # image -> the crop the model saw
    timings: dict = field(default_factory=dict)
    components: np.ndarray | None = field(default=None, repr=False)  # (k, C') as fitted; row g is concept g

    def concept(self, i: int) -> Concept:
        return self.concepts[i]

    def summary(self) -> list[str]:
        """One line per concept: rank, importance, flips, location and flags."""
        out = []
        for rank, c in enumerate(self.concepts, 1):
            flags = "; ".join(t for _, t in c.flags)
            out.append(f"#{rank} concept {c.index}: importance {c.importance:+.3f} (probability drop; log-prob "
                       f"{c.logprob_drop:+.2f}), flips "
                       f"{c.flipped}/{c.predicted}, coverage {c.coverage:.0%}, border {c.location['border']:.0%}"
                       + (f", other classes {c.other_ratio:.2f}" if c.other_ratio is not None else "")
                       + (f"  [{flags}]" if flags else ""))
        return out

    def to_json(self, images: bool = True, size: int = 64) -> dict:
        crops = {}
        if images and self.crops is not None:
            wanted = {e.image for c in self.concepts for e in c.examples}
            crops = {str(i): png_data_uri(self.crops(i).resize((168, 168), Image.BILINEAR), "JPEG", quality=85)
                     for i in sorted(wanted)}
        return {"kind": "concepts", "model": self.model, "layer": self.layer, "class": self.cls, "label": self.label,
                "vs": self.vs, "vs_label": self.vs_label, "folder": self.folder, "images": self.images,
                "labels_from": self.labels_from, "k": self.k, "k_selection": to_jsonable(self.k_selection),
                "k_rule": K_RULE,
                "sample": self.sample, "method": self.method, "others": self.others, "options": self.options,
                "concepts": [c.to_json(size if images else None) for c in self.concepts],
                "icons": {c.key: (png_data_uri(c.icon.to_pil()) if images and c.icon is not None else None)
                          for c in self.concepts if c.key},
                "vocabulary": _vocabulary_json(self.vocabulary, images, size), "crops": crops}

    def to_html(self, title: str | None = None) -> str:
        return concepts_html(self.to_json(), title or f"blocklens · concepts of {self.label} · {self.layer} · {self.model}")

    def save_html(self, path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(self.to_html(), encoding="utf-8")
        tmp.replace(p)
        return p

    def _repr_html_(self) -> str:
        """In a notebook: the concepts page in an isolated iframe (its CSP keeps it offline)."""
        import html

        return (f'<iframe sandbox="allow-scripts" style="width:100%;height:900px;border:0" '
                f'srcdoc="{html.escape(self.to_html(), quote=True)}"></iframe>')


def _vocabulary_json(voc: dict | None, images: bool, size: int) -> dict | None:
    if voc is None:
        return None
    out = {k: v for k, v in voc.items() if k not in ("channels",)}
    out["channels"] = []
    for ch in voc["channels"]:
        d = {k: v for k, v in ch.items() if k not in ("examples", "icon")}
        d["examples"] = [e.to_json(size if images else None) for e in ch["examples"]]
        d["icon"] = png_data_uri(ch["icon"].to_pil()) if images and ch.get("icon") is not None else None
        out["channels"].append(d)
    return to_jsonable(out)


# ---------------------------------------------------------------------------------------------- which images


def folder_labels(model, images: Sequence[str]) -> tuple[np.ndarray | None, str]:
    """Per image its class from its first-level subfolder (the ImageFolder convention: ``dog/1.jpg``), and how
    they were read; ``(None, why not)`` when some image is not in a subfolder or a subfolder is not a class name
    (then the model's predictions choose)."""
    tops = [p.split("/", 1)[0] if "/" in p else None for p in images]
    if not images or any(t is None for t in tops):
        return None, "predictions (the folder has images outside class subfolders)"
    mapping, unknown = {}, []
    for name in sorted(set(tops)):
        for candidate in (name, name.replace("_", " ")):
            try:
                mapping[name] = model.class_index(candidate)
                break
            except BlocklensError:
                continue
        else:
            unknown.append(name)
    if unknown:
        return None, f"predictions (subfolders {', '.join(unknown[:3])}{'...' if len(unknown) > 3 else ''} are not class names)"
    return np.asarray([mapping[t] for t in tops], np.int64), "folders"


def check_run(model, info, root, images: Sequence[str], c_idx: int, v_idx: int | None,
              k: int | None) -> tuple[np.ndarray | None, str]:
    """What a run checks before any work, its classes (``c_idx``, ``v_idx``) and layer (``info``) known: the
    second class is another one, ``k`` is possible at the layer, and a folder whose subfolders name classes has
    images of both. Returns :func:`folder_labels` of ``images`` (the app checks a request with it too)."""
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


# ---------------------------------------------------------------------------------------------- chunks


@dataclass
class ConceptJob:
    """One chunk of images for a worker (picklable; the model is rebuilt from its spec). ``phase`` "scan"
    (predictions, evidence-weighted samples, pair attributions) or "measure" (maps, removals, peaks)."""

    index: int
    phase: str
    images: list[str]
    folder: str
    layer: str
    cls: int
    vs: int | None
    classes: list[int]            # per image: its folder label, or -1 (then the prediction decides)
    positions: int
    seed: int
    key: str
    model: str
    fingerprint: str
    store: str
    storage_options: dict = field(default_factory=dict)
    components: Any = None        # (k, C') for "measure"
    roles: list[int] | None = None  # "measure": 1 class image, 0 other image
    write: bool = True
    device: str | None = None
    threads: int | None = None
    loader: Callable[[], Any] | None = None
    weights: str | None = None


def _inputs(model, root: Path, images: Sequence[str], ok: list):
    """``(i, rel, x)`` for every readable image (its model input on the model's device); ``ok`` gets 1 or 0 per
    image, so the driver knows which rows are whose."""
    for i, rel in enumerate(images):
        try:
            x, _ = prepared(model, root / rel)
        except (ImageError, OSError):
            ok.append(0)
            continue
        ok.append(1)
        yield i, rel, x.to(model.device)


def scan_chunk(model, job: ConceptJob) -> dict[str, np.ndarray]:
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


def measure_chunk(model, job: ConceptJob) -> dict[str, np.ndarray]:
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


def _execute(job: ConceptJob, model, store: IconStore | None) -> dict:
    arrays = (scan_chunk if job.phase == "scan" else measure_chunk)(model, job)
    data = npz_bytes(arrays)
    if not parent_alive():  # the run was killed: write nothing behind its back
        os._exit(1)
    if job.write:
        store.files.write(_shard_rel(job), data)
        data = None
    return {"chunk": job.index, "data": data}


def run_concept_chunk(job: ConceptJob) -> dict:
    """Worker entry point (local process or Ray task): one chunk of a phase, its shard put into the store."""
    use_threads(job.threads)
    model = worker_model(job)
    store = IconStore(job.store, storage_options=job.storage_options) if job.write else None
    return _execute(job, model, store)


def _shard_rel(job: ConceptJob) -> str:
    return f"{CONCEPTS_DIR}/{job.key}/{job.phase}/{job.index:06d}.npz"


# ---------------------------------------------------------------------------------------------- k


def _reproduced(full: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each row of ``full`` ``(k, C')``, its best cosine with a row of ``other``."""
    fn = full / np.maximum(np.linalg.norm(full, axis=1, keepdims=True), 1e-12)
    on = other / np.maximum(np.linalg.norm(other, axis=1, keepdims=True), 1e-12)
    return (fn @ on.T).max(1)


def choose_k(matrix: np.ndarray, row_image: np.ndarray, ks: Sequence[int] = KS, resamples: int = 3,
             seed: int = 0, max_rows: int = 8000) -> tuple[int, list[dict]]:
    """The number of concepts (see the module docstring, step 2) and the table it was chosen from: per ``k`` the
    relative reconstruction error and the stability, the least reproduced concept's mean best cosine with the
    concepts fitted on ``resamples`` random 80% of the images. The chosen ``k`` is the largest whose every concept
    is reproduced (stability >= STABLE); failing that, the most stable one."""
    rng = np.random.default_rng(seed)
    if len(matrix) > max_rows:
        keep = np.sort(rng.choice(len(matrix), size=max_rows, replace=False))
        matrix, row_image = matrix[keep], row_image[keep]
    images = np.unique(row_image)
    subsets = [np.isin(row_image, rng.choice(images, size=max(1, int(0.8 * len(images))), replace=False))
               for _ in range(resamples)]
    table = []
    for k in ks:
        if k > min(matrix.shape) or any(k > min(int(m.sum()), matrix.shape[1]) for m in subsets):
            break
        _, h_all, err = nmf_matrix(matrix, k, max_iter=100)
        match = np.mean([_reproduced(h_all, nmf_matrix(matrix[m], k, max_iter=100)[1]) for m in subsets], axis=0)
        table.append({"k": k, "relative_error": round(err, 4), "stability": round(float(match.min()), 4)})
    if not table:
        raise BlocklensError(f"too few sampled positions ({matrix.shape[0]}) to choose a number of concepts")
    stable = [r for r in table if r["stability"] >= STABLE]
    chosen = stable[-1]["k"] if stable else max(table, key=lambda r: r["stability"])["k"]
    for r in table:
        r["chosen"] = r["k"] == chosen
    return chosen, table


# ---------------------------------------------------------------------------------------------- the run


def _source(model, folder_or_index, store) -> tuple[Path, list[str], ActivationIndex | None]:
    if isinstance(folder_or_index, ActivationIndex):
        return folder_or_index.folder, list(folder_or_index.images), folder_or_index
    text = str(folder_or_index)
    if len(text) == 16 and all(ch in "0123456789abcdef" for ch in text) and not Path(text).exists():
        index = load_index(text, store=store)
        return index.folder, list(index.images), index
    root = Path(text).expanduser().resolve()
    if not root.is_dir():
        raise BlocklensError(f"{text!r} is neither a folder of images nor an index key (blocklens index FOLDER)")
    images, ignored = folder_images(root)
    if not images:
        raise BlocklensError(f"no image files in {root} (subfolders included; {ignored} other file(s) ignored)")
    return root, images, None


def _run_phase(jobs: list[ConceptJob], model, store: IconStore, *, workers: int, threads, device, bar, say) -> list:
    """Run the jobs that have no shard yet; return every job's arrays, in order."""
    todo = [j for j in jobs if store.files.read(_shard_rel(j)) is None]
    errors: list[str] = []

    def on_result(job, res):
        if res.get("data") is not None:
            store.files.write(_shard_rel(job), res["data"])
        bar.update(len(job.images))

    def on_error(job, e):
        errors.append(f"{job.phase} chunk {job.index} ({job.images[0]}..): {describe_error(e)}")
        say(errors[-1])
        bar.update(len(job.images))

    bar.update(sum(len(j.images) for j in jobs) - sum(len(j.images) for j in todo))
    run_jobs(todo, ray=None, workers=workers, threads=threads, device=device, gpus_per_task=0, ray_init=None,
             on_result=on_result, on_error=on_error, fn=run_concept_chunk, execute=lambda j: _execute(j, model, store))
    if errors:
        raise BlocklensError(f"{len(errors)} chunk(s) failed (run again to retry them): " + "; ".join(errors))
    return [npz_load(store.files.read(_shard_rel(j))) for j in jobs]


def class_concepts(model: Any, folder_or_index, cls, layer: str | None = None, k: int | None = None, *,
                   vs=None, store: IconStore | str | os.PathLike | None = None, storage_options: dict | None = None,
                   icons: bool = True, positions: int = 16, max_images: int = 1000, max_others: int = 200,
                   max_rows: int = 40_000, examples: int = 8, chunk: int = 16, seed: int = 0, workers: int = 0,
                   threads: int | None = None, device: str | None = None, loader: Callable[[], Any] | None = None,
                   weights: str | os.PathLike | None = None, progress: bool | None = None,
                   log: Callable[[str], None] | None = None,
                   on_progress: Callable[[Progress], None] | None = None, **recipe) -> ClassConcepts:
    """The concepts the model relies on for ``cls`` at ``layer`` over a folder (or an index's folder); see the
    module docstring for the method. ``k``: the number of concepts (default: chosen by reconstruction and
    stability); ``vs``: a second class, for the pair's vocabulary and each concept's effect on the pair;
    ``positions``: rows sampled per class image for the factorization (at most ``max_rows`` in all);
    ``max_images``: the bound on images scanned (an error, before any work, when the folder needs more);
    ``max_others``: images of other classes measured for the audit; ``examples``: top patches per concept;
    ``icons``: each concept's direction rendered through the store (recipe options as :func:`blocklens.icons`).
    ``workers``: local processes for the chunks (0: this process). ``on_progress(Progress)``: each phase's
    progress (``scan``, ``factorize``, ``measure``, ``icons``, ``vocabulary icons``), chunks found in the store
    counted as done."""
    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    for name, v, low in (("positions", positions, 1), ("max_images", max_images, 1), ("max_others", max_others, 0),
                         ("examples", examples, 1), ("chunk", chunk, 1), ("workers", workers, 0)):
        if v < low:
            raise BlocklensError(f"{name} must be at least {low}, got {v}")
    model, spec, weights = driver_model(model, loader=loader, weights=weights, device=device, remote=workers > 0)
    info = spatial_layer(model, layer or default_layers(model)[-1], "class concepts")
    c_idx = model.class_index(cls)
    v_idx = model.class_index(vs) if vs is not None else None
    store = store if isinstance(store, IconStore) else IconStore(store, storage_options=storage_options)
    root, images, index = _source(model, folder_or_index, store)
    labels, labels_from = check_run(model, info, root, images, c_idx, v_idx, k)
    if labels is not None:
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
    scan_images = [images[i] for i in scan_ids]
    scan_labels = [int(labels[i]) if labels is not None else -1 for i in scan_ids]
    fkey = folder_key(root, scan_images)
    key = hashlib.sha256(json.dumps([CONCEPTS_VERSION, model.fingerprint, info.name, fkey, c_idx, v_idx, positions,
                                     seed, scan_labels, model.input_size, model.resize], sort_keys=True).encode()
                         ).hexdigest()[:16]
    remote = workers > 0
    threads = default_threads(threads, workers, None)
    common = dict(folder=str(root), layer=info.name, cls=c_idx, vs=v_idx, positions=positions, seed=seed,
                  model=spec or model.name, fingerprint=model.fingerprint, store=store.url,
                  storage_options=dict(store.storage_options), write=store.shared or not remote, threads=threads,
                  loader=loader, weights=str(weights) if weights else None)
    spans = [(s, min(s + chunk, len(scan_images))) for s in range(0, len(scan_images), chunk)]
    show = sys.stderr.isatty() if progress is None else progress
    recipe = _icon_progress(recipe, on_progress)
    say(f"concepts of {model.labels[c_idx]!r} at {info.name} of {model.name}: {len(scan_images)} images of {root} "
        f"to scan (labels from {labels_from}), chunks of {chunk} in {store.url}")
    times = {}
    with Tracker("scan", len(scan_images), on_progress=on_progress, show=show, desc="concepts: scan",
                 unit="img") as bar:
        scans = _run_phase([ConceptJob(n, "scan", scan_images[a:b], classes=scan_labels[a:b], key=key, **common)
                            for n, (a, b) in enumerate(spans)], model, store, workers=workers, threads=threads,
                           device=device, bar=bar, say=say)
    times["scan"] = time.perf_counter() - t0

    # -- which images are the class's, which the others', from the scan
    ok = np.concatenate([sc["ok"] for sc in scans]).astype(bool)
    pred = np.concatenate([sc["pred"] for sc in scans])            # per readable image
    rows = [sc["rows"] for sc in scans]
    row_image = [sc["row_image"] + a for (a, _), sc in zip(spans, scans)]   # scan positions
    neg = any(bool(sc["neg"].any()) for sc in scans)
    pair_arrays = {name: [sc[name] for sc in scans] for name in ("pair", "hi", "hi_pos", "lo", "lo_pos")} \
        if v_idx is not None else None
    readable = np.nonzero(ok)[0]                 # scan positions of readable images
    pred_full = np.full(len(scan_images), -1, np.int64)
    pred_full[readable] = pred
    lab = np.asarray(scan_labels)
    label_of = np.where(lab >= 0, lab, pred_full)
    is_cls = ok & (label_of == c_idx)
    is_other = ok & ((label_of == v_idx) if v_idx is not None else (label_of != c_idx))
    if not is_cls.any():
        top = np.bincount(pred_full[readable], minlength=len(model.labels)).argsort()[::-1][:3] if len(readable) else []
        raise BlocklensError(f"no image of {root} is predicted as {model.labels[c_idx]!r} ({ok.sum()} readable images; "
                             f"most predicted: {', '.join(model.labels[int(i)] for i in top)})")
    others_pos = np.nonzero(is_other)[0]
    if labels is None and len(others_pos) > max_others:
        others_pos = others_pos[np.linspace(0, len(others_pos) - 1, max_others).round().astype(int)]
    cls_pos = np.nonzero(is_cls)[0]

    # -- the sample and the factorization
    if on_progress is not None:
        on_progress(Progress("factorize", 0, 0, elapsed=time.perf_counter() - t0))
    raw = np.concatenate(rows).astype(np.float64)
    r_img = np.concatenate(row_image)
    keep = np.isin(r_img, cls_pos)
    raw, r_img = raw[keep], r_img[keep]
    rng = np.random.default_rng(seed)
    if len(raw) > max_rows:
        pick = np.sort(rng.choice(len(raw), size=max_rows, replace=False))
        raw, r_img = raw[pick], r_img[pick]
    matrix = np.concatenate([np.maximum(raw, 0), np.maximum(-raw, 0)], axis=1) if neg else raw
    if k is None:
        k, table = choose_k(matrix, r_img)
    else:
        k, table = int(k), []
        if k > min(matrix.shape):
            raise BlocklensError(f"k={k} is more concepts than the sample allows ({matrix.shape[0]} positions x "
                                 f"{matrix.shape[1]} columns); give a smaller k or more images")
    _, comps, rel_err = nmf_matrix(matrix, k)
    directions = fold(comps, info.channels)
    times["factorize"] = time.perf_counter() - t0 - times["scan"]

    # -- measure: maps, removal, peaks
    measure_ids = np.sort(np.concatenate([cls_pos, others_pos]))
    roles = [1 if is_cls[i] else 0 for i in measure_ids]
    mkey = hashlib.sha256(key.encode() + comps.astype(np.float32).tobytes() + measure_ids.tobytes()).hexdigest()[:16]
    m_images = [scan_images[i] for i in measure_ids]
    m_spans = [(s, min(s + chunk, len(m_images))) for s in range(0, len(m_images), chunk)]
    t1 = time.perf_counter()
    with Tracker("measure", len(m_images), on_progress=on_progress, show=show, desc="concepts: measure",
                 unit="img") as bar:
        measured = _run_phase([ConceptJob(n, "measure", m_images[a:b], classes=[], key=f"{key}/{mkey}",
                                          components=comps.astype(np.float32), roles=roles[a:b], **common)
                               for n, (a, b) in enumerate(m_spans)], model, store, workers=workers, threads=threads,
                              device=device, bar=bar, say=say)
    times["measure"] = time.perf_counter() - t1
    cat = {name: np.concatenate([m[name] for m in measured]) for name in measured[0] if name != "ok"}
    m_ok = np.concatenate([m["ok"] for m in measured]).astype(bool)
    m_roles = np.asarray(roles)[m_ok]
    m_paths = [p for p, good in zip(m_images, m_ok) if good]
    cls_rows = np.nonzero(m_roles == 1)[0]      # rows of peak / maps / mass that are class images
    oth_rows = np.nonzero(m_roles == 0)[0]
    class_paths = [m_paths[i] for i in cls_rows]
    maps = cat["maps"][cls_rows]                 # (n, k, H, W)
    peak, peak_pos, mass = cat["peak"], cat["peak_pos"], cat["mass"]
    drop, pdrop, after, before = cat["drop"], cat["pdrop"], cat["after"], cat["before"]
    predicted = before == c_idx
    rf = int(receptive_field(model, info.name)["size"])
    S, H, W = model.input_size, info.height, info.width
    band = BORDER * S

    def crop_of(i: int) -> Image.Image:
        return prepared(model, root / class_paths[i])[1]

    concepts = []
    for g in range(k):
        pk = peak[cls_rows, g]
        order = np.argsort(-pk, kind="stable")
        exs, centres = [], []
        for rank, i in enumerate(order[:max(examples, 32)]):
            y, x = divmod(int(peak_pos[cls_rows[i], g]), W)
            centre = ((x + 0.5) * S / W, (y + 0.5) * S / H)
            centres.append(centre)
            if rank < examples:
                box = patch_box(y, x, (H, W), S, rf)
                patch = np.asarray(crop_of(int(i)).crop(box).convert("RGB"))
                exs.append(ConceptExample(int(i), class_paths[i], y, x, float(pk[i]), centre, box, patch))
        cen = np.asarray(centres)
        top_c = cen[:examples]
        middle = np.median(top_c, axis=0)
        spread = float(np.median(np.linalg.norm(top_c - middle, axis=1)))
        edge = np.minimum.reduce([top_c[:, 0], top_c[:, 1], S - top_c[:, 0], S - top_c[:, 1]])
        heat, _, _ = np.histogram2d(cen[:, 1], cen[:, 0], bins=8, range=[[0, S], [0, S]])
        location = {"heat": heat.astype(int).tolist(), "bins": 8, "frame": S, "border": float((edge < band).mean()),
                    "band": band, "centre": [float(middle[0]), float(middle[1])], "spread": spread,
                    "top": len(top_c)}
        other_ratio = (float(peak[oth_rows, g].mean() / max(pk.mean(), 1e-12)) if len(oth_rows) else None)
        flipped = int((predicted & (after[:, g] != c_idx)).sum())
        concepts.append(Concept(
            g, directions[g], float(pdrop[:, g].mean()), float(pdrop[:, g].std()),
            flipped / max(int(predicted.sum()), 1), flipped, int(predicted.sum()),
            float((mass[cls_rows, g] >= 1.0 / (2 * k)).mean()), other_ratio, location, [], exs, maps[:, g],
            drops=pdrop[:, g].copy(), logprob_drop=float(drop[:, g].mean()), logprob_drops=drop[:, g].copy(),
            pair_drop=float(cat["pair_drop"][:, g].mean()) if v_idx is not None and len(cat["pair_drop"]) else None))
    concepts.sort(key=lambda c: -c.importance)
    best = max(concepts[0].importance, 0.0)
    other_name = model.labels[v_idx] if v_idx is not None else "other classes'"
    for c in concepts:
        important = c.importance >= max(IMPORTANT * best, IMPORTANT_MIN)
        loc = c.location
        located = important and loc["top"] >= LOCATED_MIN
        if located and loc["spread"] <= SPREAD * S:
            c.flags.append(("fixed-location", f"important, and its top {loc['top']} patches are centred within "
                                              f"{loc['spread']:.0f} px (median) of ({loc['centre'][0]:.0f}, "
                                              f"{loc['centre'][1]:.0f}) in the {S} px frame"))
        if located and loc["border"] >= 0.5:
            c.flags.append(("border", f"important, and {loc['border']:.0%} of its top {loc['top']} patches are "
                                      f"centred within {loc['band']:.0f} px of the frame's edge"))
        if c.other_ratio is not None and c.other_ratio >= OTHER:
            c.flags.append(("other-classes", f"its mean peak on {other_name} images is {c.other_ratio:.0%} of "
                                             f"its mean peak on {model.labels[c_idx]} images"))
    if icons:
        got = get_icons(model, [direction_target(model, info.name, c.direction) for c in concepts], store=store,
                        progress=progress, **recipe)
        for c, icon in zip(concepts, got):
            c.icon, c.key = icon, icon.key

    vocabulary = None
    if v_idx is not None:
        vocabulary = _vocabulary(model, info, c_idx, v_idx, scan_images, readable, is_cls | is_other, pair_arrays,
                                 root, rf, examples, icons, store, progress, recipe)
    times["total"] = time.perf_counter() - t0
    sample = {"rows": int(matrix.shape[0]), "columns": int(matrix.shape[1]), "per_image": positions,
              "images": int(len(cls_pos)), "weighting": "evidence for the class (positive part) + 1% of its mean",
              "signed": neg, "relative_error": round(rel_err, 4)}
    method = (f"NMF (k={k}) of {sample['rows']} sampled positions of {len(cls_pos)} {model.labels[c_idx]} images at "
              f"{info.name}{' ([relu(A), relu(-A)])' if neg else ''}; importance: mean drop of the class's "
              "probability when a concept's share of the activations is removed (its log-probability drop is "
              "given too); flips: share of correctly predicted images whose top-1 changes")
    return ClassConcepts(model.name, info.name, c_idx, model.labels[c_idx], str(root), class_paths, labels_from, k,
                         table, sample, method, concepts, v_idx, model.labels[v_idx] if v_idx is not None else None,
                         vocabulary, {"count": int(len(oth_rows)), "label": other_name},
                         {"positions": positions, "seed": seed, "examples": examples, "max_rows": max_rows,
                          "key": key, "index": index.key if index is not None else None},
                         crop_of, {k_: round(v, 3) for k_, v in times.items()}, comps)


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


def _vocabulary(model, info, c_idx, v_idx, scan_images, readable, mask, arrays, root, rf, examples, icons, store,
                progress, recipe, top: int = 8) -> dict:
    """The channels with the most evidence for one class over the other, averaged over the images of both, each
    with the patches where it carried the most evidence for its side."""
    pair, hi, hi_pos, lo, lo_pos = (np.concatenate(arrays[n]) for n in ("pair", "hi", "hi_pos", "lo", "lo_pos"))
    rows = np.nonzero(mask[readable])[0]          # rows (readable images) of either class
    paths = [scan_images[readable[r]] for r in rows]
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
                crop = prepared(model, root / paths[j])[1]
                exs.append(ConceptExample(int(j), paths[j], y, x, float(score[j]), ((x + 0.5) * S / W, (y + 0.5) * S / H),
                                          box, np.asarray(crop.crop(box).convert("RGB"))))
            channels.append({"channel": int(ch), "side": side, "evidence": float(mean[ch]), "examples": exs,
                             "icon": None, "key": ""})
    if icons:
        got = get_icons(model, info.name, [c["channel"] for c in channels], store=store, progress=progress, **recipe)
        for c, icon in zip(channels, got):
            c["icon"], c["key"] = icon, icon.key
    return {"a": c_idx, "b": v_idx, "a_label": model.labels[c_idx], "b_label": model.labels[v_idx],
            "images": len(rows), "score": "logit(a) - logit(b)", "method": "linear (sum over positions of A * d score / dA), "
            "mean over the images of both classes; examples ranked by the channel's evidence for its side",
            "channels": channels}
