"""Semantic dictionary: at every position of a layer, which detectors fired, as pictures rather than numbers.

For one image at one layer with activations ``A[c, y, x]``, the dictionary lists, at each position, the
``top`` channels by activation with their values (the reference interface shows the top 4-5 at every cell of a
14x14 layer and lets the pointer move over them). ``bl.semantic_dictionary(..., icons=True)``
(:mod:`blocklens.blocks`) gives every channel that appears anywhere its feature visualization from the icon store.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import BlocklensError
from .common import prepare, spatial_layer, to_jsonable


@dataclass
class SemanticDictionary:
    """``channels`` (H, W, top) and ``values`` (H, W, top): the strongest channels at each position, strongest
    first; ``magnitude`` (H, W): the norm of the activation vector there; ``icons``: channel -> Icon."""

    layer: str
    top: int
    channels: np.ndarray
    values: np.ndarray
    magnitude: np.ndarray
    icons: dict[int, object] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.channels.shape[:2])

    @property
    def used_channels(self) -> list[int]:
        """Every channel that is in the top list of some position, most frequent first."""
        ids, counts = np.unique(self.channels, return_counts=True)
        return [int(c) for c in ids[np.argsort(-counts, kind="stable")]]

    def at(self, x: int, y: int) -> list[tuple[int, float]]:
        """The (channel, value) list at column ``x``, row ``y``."""
        h, w = self.shape
        if not (0 <= x < w and 0 <= y < h):
            raise BlocklensError(f"position ({x},{y}) is outside the {w}x{h} grid of layer {self.layer!r}")
        return [(int(c), float(v)) for c, v in zip(self.channels[y, x], self.values[y, x])]

    def __repr__(self) -> str:
        h, w = self.shape
        return f"<SemanticDictionary {self.layer} {w}x{h}, top {self.top}, {len(self.used_channels)} channels used>"

    def to_json(self) -> dict:
        return to_jsonable({"layer": self.layer, "top": self.top, "shape": list(self.shape),
                            "channels": self.channels, "values": self.values, "magnitude": self.magnitude,
                            "icons": {c: i.key for c, i in self.icons.items()} if self.icons else None})


def semantic_dictionary(model, image, layer: str, top: int = 5) -> SemanticDictionary:
    """The top-``top`` channels at every position of ``layer`` for ``image``."""
    info = spatial_layer(model, layer, "a semantic dictionary")
    if not 1 <= top <= info.channels:
        raise BlocklensError(f"top={top} must be between 1 and the {info.channels} channels of {info.name!r}")
    x = prepare(model, image).x
    act = model.activations(x, info.name)[info.name][0]  # (C, H, W)
    values, channels = torch.topk(act.permute(1, 2, 0), top, dim=-1)  # (H, W, top)
    result = SemanticDictionary(info.name, top, channels.numpy().astype(np.int64), values.numpy().astype(np.float32),
                                act.norm(dim=0).numpy().astype(np.float32))
    return result
