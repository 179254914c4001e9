"""The activation atlas (Carter et al., Distill 2019): the whole space of one layer at once, over a folder.

``activation_atlas(model, "blocks.11", index, grid=20)`` takes the activation vectors an
:class:`~blocklens.dataset.index.ActivationIndex` sampled (random non-edge positions, one per image by default), lays
them out in 2-D with UMAP (umap-learn, cosine metric, a fixed ``random_state``), rescales the layout to the unit
square and bins it into ``grid x grid`` cells, dropping cells with fewer than ``min_points`` samples. Each
cell then gets:

- an icon: the cell's mean activation vector, whitened (multiplied by ``(Cov + eps I)^-1`` of the sampled
  vectors, ``eps`` = ``whiten`` times the covariance's mean eigenvalue), rendered with the direction objective
  ``dot * max(0.1, cos)^cossim_pow`` and cached in the icon store (its key names the direction, the cosine
  power and the recipe: a second call renders nothing);
- its class evidence: every sample carries, from the index, its linear attribution (``sum_c A * d logprob /
  dA`` at its position) to each of its image's top predicted classes; a cell's evidence for a class is the sum
  of those attributions over the cell's samples divided by the cell's sample count (a class a sample's image
  did not rank contributes 0). Verify one by hand: ``index.layer(L).sample_attribution[i]`` for the samples
  ``cell.samples``;
- its dataset examples: patches of the cell's samples (the image and position each vector came from).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..analyses.common import to_jsonable
from ..errors import BlocklensError
from ..iconcache import icons
from ..images import picture_data_uri
from ..optvis.targets import direction_target
from ..web.report import HtmlPage, atlas_html
from .examples import crop_patch
from .index import load_index

__all__ = ["AtlasCell", "ActivationAtlas", "activation_atlas", "umap_layout", "whitening", "DEFAULT_ATLAS_COSSIM_POW"]

DEFAULT_ATLAS_COSSIM_POW = 1.0


def umap_layout(vectors: np.ndarray, n_neighbors: int = 20, min_dist: float = 0.05, seed: int = 0) -> np.ndarray:
    """``(N, C)`` -> ``(N, 2)`` UMAP coordinates (cosine metric, ``random_state=seed``: reproducible)."""
    try:
        import umap  # imported here: numba makes it slow to import
    except ImportError:
        raise BlocklensError("the activation atlas needs umap-learn, an optional dependency: "
                             "pip install umap-learn (or pip install 'blocklens[atlas]')") from None
    n = len(vectors)
    if n < 8:
        raise BlocklensError(f"only {n} sampled activation vectors: an atlas needs at least 8 (index more images, "
                             "or more samples per image with blocklens index --samples N)")
    import warnings

    import torch

    threads = torch.get_num_threads()  # umap's OpenMP use changes torch's thread count: put it back after
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_jobs overridden by random_state, etc.
            reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(int(n_neighbors), n - 1)),
                                min_dist=float(min_dist), metric="cosine", random_state=int(seed),
                                init="spectral" if n > 20 else "random")
            return np.asarray(reducer.fit_transform(np.asarray(vectors, np.float32)), np.float64)
    finally:
        torch.set_num_threads(threads)


def whitening(vectors: np.ndarray, eps: float = 0.01) -> np.ndarray:
    """``(Cov + eps * mean eigenvalue * I)^-1`` of ``(N, C)`` vectors (uncentred second moments, as directions
    are read from the origin)."""
    v = np.asarray(vectors, np.float64)
    cov = v.T @ v / max(1, len(v))
    lam = eps * max(float(np.trace(cov)) / cov.shape[0], 1e-12)
    return np.linalg.inv(cov + lam * np.eye(cov.shape[0]))


@dataclass
class AtlasCell:
    """One cell of the grid: ``row``/``col``, ``samples`` (rows of the index's samples), ``direction`` (the
    whitened mean vector rendered), ``mean`` (the plain mean activation), ``classes`` (top classes:
    ``(index, label, evidence)``), ``icon`` (an Icon, or None)."""

    row: int
    col: int
    samples: list[int]
    mean: np.ndarray = field(repr=False)
    direction: np.ndarray = field(repr=False)
    classes: list[tuple[int, str, float]]
    key: str = ""
    icon: Any = None

    @property
    def count(self) -> int:
        return len(self.samples)


@dataclass
class ActivationAtlas(HtmlPage):
    """The atlas of one layer: ``layout`` ``(N, 2)`` in [0, 1] (one point per sample), ``cells``, ``grid``."""

    model: str
    layer: str
    index_key: str
    grid: int
    layout: np.ndarray = field(repr=False)
    cells: list[AtlasCell]
    options: dict
    sample_images: np.ndarray = field(repr=False)
    sample_positions: np.ndarray = field(repr=False)
    examples: Callable[[int], Any] | None = field(default=None, repr=False)  # sample -> (patch, path)

    @property
    def points(self) -> int:
        return len(self.layout)

    def cell(self, row: int, col: int) -> AtlasCell | None:
        for c in self.cells:
            if (c.row, c.col) == (row, col):
                return c
        return None

    def to_json(self, images: bool = True, examples: int = 6, icon_size: int | None = None) -> dict:
        """Plain data: the cells (with icons and ``examples`` patches each as ``data:`` URIs when ``images``; see
        :func:`blocklens.images.picture_data_uri`)."""
        cells = []
        for c in self.cells:
            d = {"row": c.row, "col": c.col, "count": c.count, "samples": c.samples, "key": c.key,
                 "classes": [{"index": i, "label": lab, "evidence": to_jsonable(ev)} for i, lab, ev in c.classes]}
            if images:
                if c.icon is not None:
                    im = c.icon.to_pil()
                    if icon_size:
                        im = im.resize((icon_size, icon_size), Image.BILINEAR)
                    d["icon"] = picture_data_uri(im, "icon")
                if self.examples is not None:
                    ex = []
                    for s in c.samples[:examples]:
                        patch, path = self.examples(s)
                        ex.append({"path": path, "sample": s, "src": picture_data_uri(
                            Image.fromarray(patch).resize((56, 56), Image.BILINEAR), "photo")})
                    d["examples"] = ex
            cells.append(d)
        return {"kind": "atlas", "model": self.model, "layer": self.layer, "index": self.index_key,
                "grid": self.grid, "points": self.points, "options": self.options,
                "layout": to_jsonable(np.round(self.layout, 4)), "cells": cells}

    def to_pil(self, cell_px: int | None = None) -> Image.Image:
        """The icons on their grid (empty cells white), row 0 at the top."""
        icons = [c.icon for c in self.cells if c.icon is not None]
        if not icons:
            raise BlocklensError("this atlas has no icons (made with icons=False)")
        px = cell_px or icons[0].image.shape[0]
        out = Image.new("RGB", (self.grid * px, self.grid * px), "white")
        for c in self.cells:
            if c.icon is not None:
                out.paste(c.icon.to_pil().convert("RGB").resize((px, px), Image.BILINEAR), (c.col * px, c.row * px))
        return out

    def to_html(self, title: str | None = None) -> str:
        return atlas_html(self, title=title)

    @property
    def frame_height(self) -> int:
        return self.grid * 48 + 160



def atlas_icons(model, layer: str, directions: list[np.ndarray], *, store=None, cossim_pow: float = 1.0,
                batch: int = 16, progress: bool | None = None, **recipe_overrides) -> tuple[list, list[str]]:
    """Direction icons (``dot * max(0.1, cos)^cossim_pow``) for ``directions`` of ``layer``, through the icon store
    (:func:`blocklens.icons`: rendered ``batch`` at a time only where missing, the same image in any batch), with
    the device's preset and ``recipe_overrides``. Returns the icons and their keys."""
    targets = [direction_target(model, layer, d, cossim_pow=cossim_pow) for d in directions]
    got = icons(model, targets, store=store, batch=batch, progress=progress, **recipe_overrides)
    return got, [i.key for i in got]


def activation_atlas(model, layer: str, index, grid: int = 20, *, min_points: int = 3, n_neighbors: int = 20,
                     min_dist: float = 0.05, seed: int = 0, whiten: float = 0.01,
                     cossim_pow: float = DEFAULT_ATLAS_COSSIM_POW, top_classes: int = 5, icons: bool = True,
                     store=None, batch: int = 16, progress: bool | None = None, **recipe) -> ActivationAtlas:
    """The activation atlas of ``layer`` over ``index`` (see the module docstring). ``recipe``: icon options
    (``size``, ``steps``, ...) as for :func:`blocklens.icons`; ``icons=False`` skips rendering."""
    index = load_index(index, model) if not hasattr(index, "manifest") else index
    index.check_model(model)
    name = model.layer(layer).name
    L = index.layer(name)
    if "s_vec" not in L.arrays or not len(L.samples):
        why = ("it has no positions" if not L.info.get("spatial", True)
               else "the index was built with samples=0: build it with blocklens index --samples 1 or more")
        raise BlocklensError(f"index {index.key} sampled no activation vectors of {name!r}: {why}")
    if grid < 1:
        raise BlocklensError(f"grid must be at least 1, got {grid}")
    vecs = L.samples.astype(np.float64)
    xy = umap_layout(vecs, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
    lo, hi = xy.min(0), xy.max(0)
    unit = (xy - lo) / np.where(hi > lo, hi - lo, 1.0)
    cols = np.clip((unit[:, 0] * grid).astype(int), 0, grid - 1)
    rows = np.clip(((1 - unit[:, 1]) * grid).astype(int), 0, grid - 1)  # y up, as in a plot
    W = whitening(vecs, whiten)
    has_attr = "s_attr" in L.arrays
    labels = model.labels
    cells: list[AtlasCell] = []
    for r in range(grid):
        for c in range(grid):
            members = np.nonzero((rows == r) & (cols == c))[0]
            if len(members) < min_points:
                continue
            mean = vecs[members].mean(0)
            direction = W @ mean
            direction = direction / (np.linalg.norm(direction) + 1e-12)
            classes = []
            if has_attr:
                ev: dict[int, float] = {}
                for s in members:
                    for cls, a in zip(L.sample_classes[s], L.sample_attribution[s]):
                        ev[int(cls)] = ev.get(int(cls), 0.0) + float(a)
                top = sorted(ev.items(), key=lambda kv: (-kv[1], kv[0]))[:top_classes]
                classes = [(k, labels[k], v / len(members)) for k, v in top]
            cells.append(AtlasCell(r, c, [int(s) for s in members], mean.astype(np.float32),
                                   direction.astype(np.float32), classes))
    if not cells:
        raise BlocklensError(f"no cell of the {grid}x{grid} grid has {min_points} samples ({len(vecs)} samples): "
                             "use a smaller grid or min_points, or index more images")
    opts = {"grid": grid, "min_points": min_points, "n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed,
            "whiten": whiten, "cossim_pow": cossim_pow, "metric": "cosine", "recipe": dict(recipe),
            "class_evidence": "per class: sum over the cell's samples of sum_c A * d logprob / dA at the sample's "
                              "position, for its image's top classes, divided by the cell's sample count"}
    if icons:
        got, keys = atlas_icons(model, name, [c.direction for c in cells], store=store, cossim_pow=cossim_pow,
                                batch=batch, progress=progress, **recipe)
        for cell, icon, key in zip(cells, got, keys):
            cell.icon, cell.key = icon, key

    def examples(s: int):
        img = int(L.sample_images[s])
        y, x = (int(v) for v in L.sample_positions[s])
        patch, _ = crop_patch(model, index, img, y, x, name)
        return patch, index.images[img]

    return ActivationAtlas(model=model.name, layer=name, index_key=index.key, grid=grid, layout=unit, cells=cells,
                           options=opts, sample_images=L.sample_images, sample_positions=L.sample_positions,
                           examples=examples)
