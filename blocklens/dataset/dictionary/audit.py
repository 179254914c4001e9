"""From measurements to atoms: where each atom fires, the classes it drives (by removal), its examples and flags.

:func:`firing` decides, from the survey's peaks, on which images each atom fires and which atoms are removed on each
image; :func:`drives_of` turns the removal sums into each atom's ranked classes; :func:`location` and
:func:`flags_of` say where its top patches sit and what is remarkable about it.
"""
from __future__ import annotations

import numpy as np

from .results import Drive
from .rules import CUE, CUE_PROB, DECISIVE, DRIVE_MIN, DRIVES, FIRE, LOCATED_TOP, REMOVALS, SPREAD

__all__ = ["firing", "add_sums", "drives_of", "location", "flags_of"]


def firing(peak: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """``(p99 (K,), fired (n, K), remove)``: an atom fires on an image when its peak there reaches ``FIRE`` of its
    99th-percentile peak over the folder (and is above zero); on each image the ``REMOVALS`` atoms firing most
    (peak over p99) are removed."""
    p99 = np.percentile(peak, 99, axis=0) if len(peak) else np.zeros(peak.shape[1])
    rel = peak / np.maximum(p99, 1e-30)
    fired = (rel >= FIRE) & (peak > 0) & (p99 > 0)[None]
    remove = []
    for i in range(len(peak)):
        on = np.nonzero(fired[i])[0]
        remove.append(sorted(on[np.argsort(-rel[i, on], kind="stable")][:REMOVALS].tolist()))
    return p99, fired, remove


def add_sums(shards: list[dict]) -> dict[str, np.ndarray]:
    """The removal shards' sums added up, their pairs concatenated (``pair_image`` stays per chunk: see the caller)."""
    out = {n: sum(s[n] for s in shards) for n in ("logit", "logprob", "prob", "pos", "pos_other", "prob_other", "n")}
    for n in ("pair_atom", "before", "after"):
        out[n] = np.concatenate([s[n] for s in shards]) if shards else np.zeros(0, np.int64)
    return out


def drives_of(sums: dict, labels: list[str], top: int = DRIVES) -> tuple[list[list[Drive]], np.ndarray]:
    """Per atom its ``top`` classes by mean logit drop over the images where it was removed, and the ``(K, classes)``
    mean probability drops (:meth:`ConceptDictionary.for_class` ranks atoms by them)."""
    n = np.maximum(sums["n"], 1)[:, None]
    logit, logprob, prob = sums["logit"] / n, sums["logprob"] / n, sums["prob"] / n
    share = np.where(sums["pos"] > 0, sums["pos_other"] / np.maximum(sums["pos"], 1e-30), 0.0)
    out = []
    for a in range(len(n)):
        if not sums["n"][a]:
            out.append([])
            continue
        mine = sums["pair_atom"] == a
        ranked = []
        for c in np.argsort(-logit[a], kind="stable")[:top]:
            was = mine & (sums["before"] == c)
            flipped, own = int((was & (sums["after"] != c)).sum()), int(was.sum())
            others = int(sums["n"][a]) - own
            ranked.append(Drive(cls=int(c), label=labels[c], logit_drop=float(logit[a, c]),
                                logprob_drop=float(logprob[a, c]), prob_drop=float(prob[a, c]),
                                other_share=float(share[a, c]), images=int(sums["n"][a]),
                                flips=flipped / max(own, 1), flipped=flipped, predicted=own,
                                other_prob_drop=float(sums["prob_other"][a, c] / others) if others else 0.0))
        out.append(ranked)
    return out, np.where(sums["n"][:, None] > 0, prob, 0.0)


def location(centres: np.ndarray, frame: int) -> dict:
    """Where the top patches' centres ``(n, 2)`` (x, y) sit: their median ``centre`` and median distance to it
    (``spread``), in input pixels, over the first :data:`LOCATED_TOP`."""
    if not len(centres):
        return {"top": 0, "centre": None, "spread": None, "frame": frame}
    top = centres[:LOCATED_TOP]
    mid = np.median(top, axis=0)
    return {"top": int(len(top)), "centre": [float(mid[0]), float(mid[1])],
            "spread": float(np.median(np.linalg.norm(top - mid, axis=1))), "frame": frame}


def flags_of(drives: list[Drive], loc: dict, fires: int) -> list[tuple[str, str]]:
    """What is remarkable about an atom, each with its figure: it never fires, it decides its top class, it raises
    its top class on images of other classes (a cue), it drives a class from one place in the frame."""
    if not fires:
        return [("dead", "fires on no image of the folder")]
    if not drives:
        return []
    d, out = drives[0], []
    if d.predicted >= 4 and d.flips >= DECISIVE:
        out.append(("decisive", f"removing it changes the prediction on {d.flipped} of {d.predicted} images "
                                f"predicted as {d.label} where it fires ({d.flips:.0%})"))
    if d.other_share >= CUE and d.other_prob_drop >= CUE_PROB:
        out.append(("cue", f"raises {d.label} wherever it appears: {d.other_share:.0%} of its drop of {d.label} "
                           f"(mean log-probability {d.logprob_drop:+.2f}) is on images not predicted as {d.label}, "
                           f"where its probability drops by {d.other_prob_drop:.2f} on average"))
    frame = loc.get("frame") or 1
    if (d.prob_drop >= DRIVE_MIN and loc.get("top", 0) >= LOCATED_TOP // 2 and loc["spread"] is not None
            and loc["spread"] <= SPREAD * frame):
        out.append(("fixed-location", f"drives {d.label} (mean probability drop {d.prob_drop:.2f}) and its top "
                                      f"{loc['top']} patches are centred within {loc['spread']:.0f} px (median) of "
                                      f"({loc['centre'][0]:.0f}, {loc['centre'][1]:.0f}) in the {frame} px frame"))
    return out
