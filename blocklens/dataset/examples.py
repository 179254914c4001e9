"""Dataset examples: the image patches of a folder that excite a unit most (and, for signed layers, least).

``dataset_examples(model, "blocks.11", 5, index)`` reads the unit's top-k images from an
:class:`~blocklens.dataset.index.ActivationIndex` (exact over the folder: see :mod:`blocklens.dataset.index`) and crops each
image, as the model saw it (resized, centre-cropped), around the peak position at the layer's receptive field
(the square holding 80% of the gradient footprint of one position, measured once per layer at index time).
Feature visualizations and natural exemplars belong side by side (Borowski et al., ICLR 2021: people predicted
a unit's behaviour 92% of the time with exemplars, 82% with visualizations alone).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BlocklensError
from ..analyses.common import to_jsonable

__all__ = ["Example", "DatasetExamples", "dataset_examples", "patch_box", "crop_patch", "default_examples"]


@dataclass
class Example:
    """One patch: ``image`` (id in the index), ``path`` (relative to the folder), ``y``/``x`` (the position on
    the layer's grid), ``value`` (the unit's activation there), ``box`` (left, top, right, bottom) in the
    model's input picture, ``patch`` (H, W, 3) uint8."""

    image: int
    path: str
    y: int
    x: int
    value: float
    box: tuple[int, int, int, int]
    patch: np.ndarray = field(repr=False)

    def to_json(self, size: int | None = 64) -> dict:
        from ..images import picture_data_uri

        d = {"image": self.image, "path": self.path, "y": self.y, "x": self.x, "value": to_jsonable(self.value),
             "box": list(self.box)}
        if size is not None:
            img = Image.fromarray(self.patch)
            if size and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            d["src"] = picture_data_uri(img, "photo")
        return d


@dataclass
class DatasetExamples:
    """A unit's top (highest spatial maxima) and, for signed layers, bottom (lowest minima) patches."""

    layer: str
    unit: int
    index_key: str
    top: list[Example]
    bottom: list[Example]
    receptive_field: int
    signed: bool

    def to_json(self, size: int | None = 64) -> dict:
        return {"layer": self.layer, "unit": self.unit, "index": self.index_key, "signed": self.signed,
                "receptive_field": self.receptive_field, "top": [e.to_json(size) for e in self.top],
                "bottom": [e.to_json(size) for e in self.bottom]}

    def _repr_html_(self) -> str:
        from ..images import picture_data_uri

        src = picture_data_uri(self.sheet(), "photo")
        return (f'<div><b>{self.layer}:{self.unit}</b> dataset examples (top row: highest'
                + (', bottom row: lowest' if self.bottom else '') + f')<br><img src="{src}"></div>')

    def sheet(self, size: int = 64) -> Image.Image:
        """The top patches in one row, the bottom ones (if any) in a second."""
        rows = [r for r in (self.top, self.bottom) if r]
        cols = max(len(r) for r in rows)
        out = Image.new("RGB", (cols * (size + 2), len(rows) * (size + 2)), "white")
        for ri, row in enumerate(rows):
            for ci, e in enumerate(row):
                out.paste(Image.fromarray(e.patch).resize((size, size), Image.BILINEAR),
                          (ci * (size + 2), ri * (size + 2)))
        return out


def patch_box(y: int, x: int, grid: tuple[int, int], input_size: int, side: int) -> tuple[int, int, int, int]:
    """The square of ``side`` input pixels centred on grid position (y, x), shifted to lie inside the input."""
    h, w = grid
    side = int(min(side, input_size))
    cy, cx = (y + 0.5) * input_size / h, (x + 0.5) * input_size / w
    top = int(round(cy - side / 2))
    left = int(round(cx - side / 2))
    top = min(max(0, top), input_size - side)
    left = min(max(0, left), input_size - side)
    return left, top, left + side, top + side


@lru_cache(maxsize=256)
def _crop_of(path: str, size: int, resize: int, sha: str | None, mtime: float) -> Image.Image:
    import hashlib

    from ..images import load_image
    from ..models.base import resize_and_crop

    data = Path(path).read_bytes()
    if sha is not None and hashlib.sha256(data).hexdigest() != sha:
        raise BlocklensError(f"{path} has changed since it was indexed: its patches would not be what the index "
                             "found; index the folder again (blocklens index)")
    return resize_and_crop(load_image(data), size, resize)


def crop_patch(model, index, image: int, y: int, x: int, layer: str) -> tuple[np.ndarray, tuple]:
    """The patch of image ``image`` of ``index`` around grid position (y, x) of ``layer``, and its box."""
    info = index.manifest["layer_info"][layer]
    rf = info["receptive_field"]
    path = index.path(image)
    if not Path(path).exists():
        raise BlocklensError(f"image {index.images[image]!r} of index {index.key} is no longer in {index.folder}; "
                             "dataset examples crop the original files")
    shas = index.manifest.get("sha256")
    crop = _crop_of(str(path), model.input_size, model.resize, shas[image] if shas else None,
                    Path(path).stat().st_mtime)
    grid = tuple(rf.get("grid") or info["shape"][1:3])
    box = patch_box(int(y), int(x), grid, model.input_size, int(rf["size"]))
    return np.asarray(crop.crop(box).convert("RGB")), box


def dataset_examples(model, layer: str, unit: int, index, k: int | None = None, bottom: bool | None = None):
    """The top ``k`` patches of ``unit`` (a channel) of ``layer`` over the folder of ``index`` (default: all
    the index kept), and the bottom ``k`` when the layer is signed (``bottom=None``) or when asked.
    ``index``: an :class:`~blocklens.dataset.index.ActivationIndex` or what :func:`blocklens.load_index` takes."""
    from .index import load_index

    index = load_index(index, model) if not hasattr(index, "manifest") else index
    index.check_model(model)
    name = model.layer(layer).name
    L = index.layer(name)
    if not 0 <= int(unit) < L.channels:
        raise BlocklensError(f"unit {unit} is out of range for layer {name!r}, which has {L.channels} channels "
                             f"(0..{L.channels - 1})")
    kk = L.top_val.shape[1] if k is None else min(int(k), L.top_val.shape[1])
    want_bottom = L.signed if bottom is None else bool(bottom)

    def row(tag: str) -> list[Example]:
        out = []
        for j in range(kk):
            img = int(getattr(L, tag + "_img")[unit, j])
            y, x = int(getattr(L, tag + "_y")[unit, j]), int(getattr(L, tag + "_x")[unit, j])
            patch, box = crop_patch(model, index, img, y, x, name)
            out.append(Example(image=img, path=index.images[img], y=y, x=x,
                               value=float(getattr(L, tag + "_val")[unit, j]), box=box, patch=patch))
        return out

    return DatasetExamples(layer=name, unit=int(unit), index_key=index.key, top=row("top"),
                           bottom=row("bot") if want_bottom else [],
                           receptive_field=int(L.info["receptive_field"]["size"]), signed=L.signed)


def examples_data(model, expl, index, k: int = 6, size: int = 56) -> dict:
    """Icon key -> the dataset examples (:func:`blocklens.dataset_examples`, as JSON with patches inline) of
    every channel icon the explanation's views show, for the layers ``index`` holds."""
    out = {}
    for lr in expl.layers:
        if lr.layer not in index.layers:
            continue
        for c, key in expl.icon_index.get(lr.layer, {}).get("channels", {}).items():
            out[key] = dataset_examples(model, lr.layer, int(c), index, k=k).to_json(size)
    return out


#: What the views say when the store holds no index for the model (people read natural exemplars better than
#: feature visualizations: Borowski et al. 2021, 92% vs 82%).
NO_INDEX_NOTE = ("dataset examples: no activation index of this model in the store; 'blocklens index FOLDER' "
                 "(then explain again) shows each unit's top patches beside its icon")


def default_examples(model, expl, store=None, *, k: int = 6, size: int = 56) -> tuple[dict | None, str]:
    """The dataset examples a report shows without being asked: from the newest finished index in ``store`` of
    this model (same weight fingerprint) that holds one of the explanation's layers. Returns ``(examples or
    None, a line saying which index they came from, or that there is none and how to make one)``."""
    from .index import list_indexes

    layers = {lr.layer for lr in expl.layers}
    for index in list_indexes(store):
        if index.manifest.get("fingerprint") == model.fingerprint and layers & set(index.layers):
            return examples_data(model, expl, index, k=k, size=size), examples_line(index)
    return None, NO_INDEX_NOTE


def examples_line(index) -> str:
    """One line naming the index that dataset examples came from."""
    return (f"dataset examples: index {index.key} ({index.count} images of {index.manifest.get('folder')}, layers "
            f"{', '.join(index.layers)}); hover or click an icon for its top patches")
