"""Shared plumbing of the analyses: the input an image becomes, layer checks, JSON conversion."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import BlocklensError, CostError
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
    x, crop = model.prepare(image)  # one decode
    return Prepared(x.to(model.device), crop)


#: Blocks whose work grows with a layer's positions (layer-to-layer attribution: one backward pass per target
#: position; activation grids: one image per position) refuse layers with more than this many positions
#: (28 x 28) unless asked for more.
MAX_POSITIONS = 28 * 28


def spatial_layer(model, layer: str | LayerInfo, what: str) -> LayerInfo:
    """The layer, checked to have positions (a conv map, a channels-last map or a token grid), or an error
    naming its layout and the spatial layers near it."""
    info = model.layer(layer)
    if not info.spatial:
        spatial = [i for i in model.layers if i.spatial]
        near = sorted(spatial, key=lambda i: abs(i.order - info.order))[:5]
        why = {"other": "its output is not a map of positions (attention internals and the like)",
               "vector": "it is a vector (no positions)"}.get(info.layout, f"its layout is {info.layout}")
        raise BlocklensError(f"{what} needs a layer with positions; {info.name!r} ({info.layout}, shape "
                             f"{info.shape}): {why}. Spatial layers nearby: "
                             f"{', '.join(f'{i.name} ({i.layout}, {i.height}x{i.width})' for i in near) or 'none'}")
    return info


def check_positions(info: LayerInfo, limit: int, why: str, option: str) -> None:
    """Raise :class:`CostError` at once when ``info`` has more positions than ``limit``."""
    if limit is not None and info.positions > limit:
        side = math.isqrt(int(limit))
        raise CostError(f"layer {info.name!r} has {info.positions} positions ({info.height}x{info.width}); {why}, "
                        f"so that would take {info.positions / max(limit, 1):.1f}x the largest allowed work "
                        f"({limit} positions, about {side}x{side}). Choose a layer with a coarser grid, or pass "
                        f"{option}={info.positions} to run it anyway")


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
