"""What class concepts return: each concept with its numbers, patches, maps and flags, and the whole as JSON or HTML.

The result objects of :func:`~blocklens.dataset.concepts.class_concepts`: :class:`ConceptExample` (one patch),
:class:`Concept` (one concept of a class) and :class:`ClassConcepts` (all of them, with the pair's vocabulary),
each with ``to_json``; :class:`ClassConcepts` also renders its self-contained page (``to_html``, ``save_html``,
notebook display).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from ...analyses.common import to_jsonable
from ...images import picture_data_uri
from ...web.report import HtmlPage, concepts_html
from .rules import K_RULE

__all__ = ["ConceptExample", "Concept", "ClassConcepts"]


@dataclass
class ConceptExample:
    """One patch: ``image`` (position in the result's ``images``), ``path`` (relative to the folder), ``y``/``x`` on
    the layer's grid, ``value`` (the concept's loading there, or a channel's evidence), ``centre`` (x, y): that
    position's centre in the model's input frame, ``box`` ``(x0, y0, x1, y1)``: the receptive field around it in
    the input frame (shifted to lie inside it: near an edge the box is not centred on ``centre``), ``patch``
    (H, W, 3) uint8, the box's pixels (None when the image could not be read again: no ``src`` in its JSON)."""

    image: int
    path: str
    y: int
    x: int
    value: float
    centre: tuple[float, float]
    box: tuple[int, int, int, int]
    patch: np.ndarray | None = field(repr=False)

    def to_json(self, size: int | None = 64) -> dict:
        d = {"image": self.image, "path": self.path, "y": self.y, "x": self.x, "value": to_jsonable(self.value),
             "centre": list(self.centre), "box": list(self.box)}
        if size and self.patch is not None:
            d["src"] = picture_data_uri(Image.fromarray(self.patch).resize((size, size), Image.BILINEAR), "photo")
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
class ClassConcepts(HtmlPage):
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
            crops = {str(i): picture_data_uri(self.crops(i).resize((168, 168), Image.BILINEAR), "photo")
                     for i in sorted(wanted)}
        return {"kind": "concepts", "model": self.model, "layer": self.layer, "class": self.cls, "label": self.label,
                "vs": self.vs, "vs_label": self.vs_label, "folder": self.folder, "images": self.images,
                "labels_from": self.labels_from, "k": self.k, "k_selection": to_jsonable(self.k_selection),
                "k_rule": K_RULE,
                "sample": self.sample, "method": self.method, "others": self.others, "options": self.options,
                "concepts": [c.to_json(size if images else None) for c in self.concepts],
                "icons": {c.key: (picture_data_uri(c.icon.to_pil(), "icon") if images and c.icon is not None else None)
                          for c in self.concepts if c.key},
                "vocabulary": _vocabulary_json(self.vocabulary, images, size), "crops": crops}

    def to_html(self, title: str | None = None) -> str:
        return concepts_html(self.to_json(), title or f"blocklens · concepts of {self.label} · {self.layer} · {self.model}")



def _vocabulary_json(voc: dict | None, images: bool, size: int) -> dict | None:
    if voc is None:
        return None
    out = {k: v for k, v in voc.items() if k not in ("channels",)}
    out["channels"] = []
    for ch in voc["channels"]:
        d = {k: v for k, v in ch.items() if k not in ("examples", "icon")}
        d["examples"] = [e.to_json(size if images else None) for e in ch["examples"]]
        d["icon"] = picture_data_uri(ch["icon"].to_pil(), "icon") if images and ch.get("icon") is not None else None
        out["channels"].append(d)
    return to_jsonable(out)


