"""What a concept dictionary returns: its atoms (icon, examples, coverage, the classes each drives, flags) and its
quality, as Python objects, JSON and a self-contained page.

:class:`Drive` (one class an atom drives), :class:`Atom` (one atom) and :class:`ConceptDictionary` (all of them,
with ``for_class``, ``to_json``, ``save_html`` and notebook display). Examples are
:class:`~blocklens.dataset.concepts.ConceptExample` s: ``path``, ``box`` ``(x0, y0, x1, y1)`` in the model's input
frame, ``value`` (the atom's code there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from ...analyses.common import to_jsonable
from ...errors import BlocklensError
from ...images import picture_data_uri
from ...web.report import HtmlPage, dictionary_html
from ..concepts.results import ConceptExample
from .codebook import Codebook

__all__ = ["Drive", "Atom", "ConceptDictionary"]

DROPS_SHOWN = 1e-3     # the page's class search sees an atom's class drops at least this large (probability)
CROPS_PER_ATOM = 4     # each atom's top images shown whole (with its map over them) in the page


def _figure(f: dict) -> str:
    """A readability figure: the score ± its standard error over units."""
    return f"{f['score']:.2f} ± {f['se_units']:.2f}"


@dataclass
class Drive:
    """One class an atom drives, measured by removing the atom's share on the images where it fires: the mean
    ``logit_drop``, ``logprob_drop`` and ``prob_drop`` of the class over those ``images``; ``other_share``: the
    share of the (positive) log-probability drop that comes from images the model does not predict as the class;
    ``flips``: the share of the fired images predicted as the class whose top-1 changes (``flipped`` of
    ``predicted``); ``other_prob_drop``: the mean probability drop on the fired images not predicted as the class. Readable as ``d.label`` or ``d["label"]``."""

    cls: int
    label: str
    logit_drop: float
    logprob_drop: float
    prob_drop: float
    other_share: float
    images: int = 0
    flips: float = 0.0
    flipped: int = 0
    predicted: int = 0
    other_prob_drop: float = 0.0

    def __getitem__(self, name: str):
        return getattr(self, name)

    def to_json(self) -> dict:
        return to_jsonable(dict(self.__dict__))


@dataclass
class Atom:
    """One atom: ``direction`` (C,) in the layer's channel space (``vector`` (C',) as fitted, non-negative),
    ``examples`` (its top patches, one per image), ``coverage`` (share of the folder's readable images where it
    fires; ``fires`` of them), ``drives`` (the classes it drives most, by mean logit drop), ``flags`` ((code,
    text)), ``location`` (where its top patches sit), ``maps`` (its codes over its top examples' images), ``icon``
    (its feature visualization) and ``key`` (the icon's store key)."""

    index: int
    direction: np.ndarray = field(repr=False)
    vector: np.ndarray = field(repr=False)
    examples: list[ConceptExample] = field(default_factory=list)
    coverage: float = 0.0
    fires: int = 0
    drives: list[Drive] = field(default_factory=list)
    flags: list[tuple[str, str]] = field(default_factory=list)
    location: dict = field(default_factory=dict)
    maps: np.ndarray | None = field(default=None, repr=False)
    icon: Any = None
    key: str = ""

    def drive(self, cls: int) -> Drive | None:
        return next((d for d in self.drives if d.cls == cls), None)

    def to_json(self, size: int | None = 64) -> dict:
        maps = {} if self.maps is None else {str(e.image): to_jsonable(np.round(m.astype(np.float32), 4))
                                             for e, m in zip(self.examples, self.maps)}
        return {"index": self.index, "coverage": self.coverage, "fires": self.fires, "key": self.key,
                "drives": [d.to_json() for d in self.drives], "flags": [{"code": c, "text": t} for c, t in self.flags],
                "location": to_jsonable(self.location), "examples": [e.to_json(size) for e in self.examples],
                "maps": maps, "direction": to_jsonable(np.round(self.direction.astype(np.float32), 5))}


@dataclass
class ConceptDictionary(HtmlPage):
    """A dictionary of concepts learned over a folder at one layer (see :func:`concept_dictionary`): ``atoms``,
    ``quality`` (explained variance on held-out images, active atoms per position, dead atoms, stability across
    seeds, each beside a PCA of equal size and the layer's channels; ``readability`` of the atoms and the channels
    when it was measured, :func:`~.readability.dictionary_readability`), ``images`` (the folder's readable images, in
    the order of ``Atom.examples[i].image``), ``codebook`` (the arrays: encode new activations with it),
    ``class_drops`` ((K, classes) mean probability drop of every class per atom), the method and options."""

    key: str
    model: str
    fingerprint: str
    layer: str
    folder: str
    images: list[str]
    method: str
    atoms: list[Atom]
    quality: dict
    codebook: Codebook = field(repr=False)
    labels: list[str] = field(default_factory=list, repr=False)
    class_drops: np.ndarray | None = field(default=None, repr=False)
    options: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict, repr=False)   # peak, peak_pos, ch_peak, ch_pos per readable image
    crops: Callable[[int], Image.Image] | None = field(default=None, repr=False)

    def atom(self, i: int) -> Atom:
        return self.atoms[i]

    def class_index(self, cls) -> int:
        if isinstance(cls, (int, np.integer)) and 0 <= int(cls) < len(self.labels):
            return int(cls)
        if isinstance(cls, str) and cls in self.labels:
            return self.labels.index(cls)
        text = str(cls).strip().lower()
        hits = [i for i, name in enumerate(self.labels) if text == name.lower()]
        hits = hits or [i for i, name in enumerate(self.labels) if text and text in name.lower()]
        if len(hits) == 1:
            return hits[0]
        near = ", ".join(self.labels[i] for i in hits[:8]) if hits else ", ".join(self.labels[:5]) + ", ..."
        raise BlocklensError(f"unknown class {cls!r} for {self.model}: {'several match: ' if hits else 'known: '}{near}")

    def for_class(self, cls, top: int | None = None) -> list[tuple[Atom, float]]:
        """The atoms ranked by the mean probability drop of ``cls`` (a name or index) when each is removed on the
        images where it fires: which atoms decided the class across the folder. ``(atom, drop)`` pairs. (The
        log-probability drop would favour atoms that lower an already improbable class further.)"""
        c = self.class_index(cls)
        drops = self.class_drops[:, c]
        order = [int(i) for i in np.argsort(-drops, kind="stable")]
        by_index = {a.index: a for a in self.atoms}
        return [(by_index[i], float(drops[i])) for i in order[:top] if i in by_index]

    def summary(self) -> list[str]:
        q = self.quality
        out = [f"{self.method.upper()} dictionary of {len(self.atoms)} atoms at {self.layer} of {self.model} over "
               f"{len(self.images)} images: explained variance {q['explained_variance']:.1%} (PCA of equal size "
               f"{q['pca']['explained_variance']:.1%}), {q['active_per_position']:.1f} active atoms per position "
               f"(channels {q['channels']['active_per_position']:.1f}), {q['dead']} dead"
               + (f", stability {q['stability']:.2f}" + (f" (PCA {q['pca']['stability']:.2f})"
                                                         if q['pca'].get('stability') is not None else
                                                         " (PCA: one chunk of images, no halves to compare)")
                  if q.get('stability') is not None else "")]
        r = q.get("readability")
        if r:
            out.append(f"readability (two-alternative trials, chance 0.50; judge: {r['judge']}): atoms "
                       f"{_figure(r['atoms']['bottom'])} against bottom patches, {_figure(r['atoms']['random'])} "
                       f"against random ones; channels {_figure(r['channels']['bottom'])} and "
                       f"{_figure(r['channels']['random'])}")
        for a in self.atoms:
            top = ", ".join(f"{d.label} {d.logit_drop:+.2f}" for d in a.drives[:3])
            flags = "; ".join(t for _, t in a.flags)
            out.append(f"atom {a.index}: fires on {a.coverage:.0%} of images; drives {top}" + (f"  [{flags}]" if flags else ""))
        return out

    def drops_json(self, least: float = DROPS_SHOWN) -> dict:
        """``class_drops`` compactly, for the page's class search: per atom (by index) the classes whose mean
        probability drop is at least ``least`` in size (rounded to 4 places), and those classes' names."""
        if self.class_drops is None:
            return {"measure": "prob_drop", "least": least, "labels": {}, "atoms": {}}
        drops = np.asarray(self.class_drops, np.float32)
        named = {d.cls: d.label for a in self.atoms for d in a.drives}
        atoms, labels = {}, {}
        for a in self.atoms:
            row = drops[a.index]
            keep = np.nonzero(np.abs(row) >= least)[0]
            atoms[str(a.index)] = {str(int(c)): round(float(row[c]), 4) for c in keep}
            for c in keep:
                labels[str(int(c))] = (self.labels[c] if c < len(self.labels)
                                       else named.get(int(c), f"class {int(c)}"))
        return {"measure": "prob_drop", "least": least, "labels": labels, "atoms": atoms}

    def to_json(self, images: bool = True, size: int = 64) -> dict:
        crops = {}
        if images and self.crops is not None:
            wanted = {e.image for a in self.atoms for e in a.examples[:CROPS_PER_ATOM]}
            got = {i: self.crops(i) for i in sorted(wanted)}
            crops = {str(i): picture_data_uri(c.resize((168, 168), Image.BILINEAR), "photo")
                     for i, c in got.items() if c is not None}   # None: the image is not in the folder any more
        return {"kind": "dictionary", "key": self.key, "model": self.model, "fingerprint": self.fingerprint,
                "layer": self.layer, "folder": self.folder, "images": self.images, "method": self.method,
                "quality": to_jsonable(self.quality), "options": to_jsonable(self.options),
                "timings": self.timings, "atoms": [a.to_json(size if images else None) for a in self.atoms],
                "class_drops": self.drops_json(),
                "icons": {a.key: (picture_data_uri(a.icon.to_pil(), "icon") if images and a.icon is not None else None)
                          for a in self.atoms if a.key},
                "crops": crops}

    def to_html(self, title: str | None = None) -> str:
        return dictionary_html(self.to_json(), title or f"blocklens · dictionary · {self.layer} · {self.model}")

