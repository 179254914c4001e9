"""Shared plumbing of the analyses: the input an image becomes, layer checks, JSON conversion."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import BlocklensError
from ..images import ImageLike
from ..probe import LayerInfo


@dataclass
class Prepared:
    """An image as the model sees it: ``x`` ``(1, 3, S, S)`` model input and ``crop`` the RGB picture."""

    x: torch.Tensor
    crop: Image.Image | None


def prepare(model, image: ImageLike | torch.Tensor | Prepared) -> Prepared:
    """Any image (path, bytes, PIL, or an already preprocessed ``(1, 3, S, S)`` tensor) -> :class:`Prepared`."""
    if isinstance(image, Prepared):
        return image
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image.unsqueeze(0)
        if x.shape[0] != 1:
            raise BlocklensError(f"one image at a time: got a batch of shape {tuple(x.shape)}")
        return Prepared(x.to(model.device), None)
    return Prepared(model.preprocess(image).to(model.device), model.crop(image))


def spatial_layer(model, layer: str | LayerInfo, what: str) -> LayerInfo:
    """The layer, checked to have positions (``(C, H, W)``), or an error naming the spatial layers near it."""
    info = model.layer(layer)
    if not info.spatial:
        near = [i.name for i in model.layers if i.spatial][-5:]
        raise BlocklensError(f"{what} needs a layer with positions (C, H, W); {info.name!r} has shape {info.shape}. "
                             f"Spatial layers include: {', '.join(near)}")
    return info


def to_jsonable(value: Any) -> Any:
    """numpy / torch values -> plain Python for ``json.dumps`` (floats rounded to 6 significant digits)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[object])(value).tolist() if value.size else []
        return value.tolist()
    if isinstance(value, (np.floating, float)):
        return float(f"{float(value):.6g}")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def class_indices(model, classes) -> list[int]:
    """A class or a list of classes (names, synonyms or indices) -> indices; errors name the closest."""
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    out = [model.class_index(c) for c in classes]
    if not out:
        raise BlocklensError("no class given")
    return out
