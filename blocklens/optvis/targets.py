"""Targets: the units a user asks to see, parsed and checked against a model.

Grammar (the command line's ``TARGET``)::

    LAYER:CHANNEL          a channel, e.g. blocks.9:12
    LAYER:CHANNEL@X,Y      a neuron: one position on the layer's grid at the model's input size, e.g. blocks.9:12@7,7
    logit:CLASS            a class by index or name, e.g. logit:282 or "logit:tiger cat"

A :class:`Target` knows its objective (bound to one batch element), a stable ``unit`` string used in icon-store
keys, and a file-friendly ``slug``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import BlocklensError
from ..store import direction_hash
from . import objectives as obj

_UNIT = re.compile(r"^(?P<channel>-?\d+)(?:@(?P<x>-?\d+),(?P<y>-?\d+))?$")


@dataclass(frozen=True)
class Target:
    kind: str                    # "channel" | "neuron" | "logit" | "direction"
    layer: str                   # canonical layer name ("<output>" for logits)
    index: int                   # channel or class index
    x: int | None = None         # neuron position on the layer's grid at the model's input size
    y: int | None = None
    grid: tuple[int, int] | None = None   # (H, W) of that grid
    label: str = ""
    vector: tuple[float, ...] | None = None
    cossim_pow: float | None = None       # a direction scored as dot * max(0.1, cos)^cossim_pow (atlas cells)

    @property
    def unit(self) -> str:
        if self.kind == "neuron":
            return f"neuron:{self.index}@{self.x},{self.y}"
        if self.kind == "direction":
            h = direction_hash(torch.tensor(self.vector))
            return f"direction:{h}" if self.cossim_pow is None else f"atlas-direction:{h}:cos{self.cossim_pow:g}"
        return f"{self.kind}:{self.index}"

    @property
    def spec(self) -> str:
        """The command-line form of this target."""
        if self.kind == "logit":
            return f"logit:{self.index}"
        if self.kind == "neuron":
            return f"{self.layer}:{self.index}@{self.x},{self.y}"
        if self.kind == "direction":
            return f"{self.layer}:{self.unit}"
        return f"{self.layer}:{self.index}"

    @property
    def slug(self) -> str:
        s = self.spec if self.kind != "logit" else f"logit-{self.index}-{self.label}"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", s.replace(":", "-").replace("@", "-at-"))

    def objective(self, batch: int | None = None) -> obj.Objective:
        if self.kind == "channel":
            return obj.channel(self.layer, self.index, batch=batch)
        if self.kind == "neuron":
            h, w = self.grid
            # the position as a fraction of the grid, so it lands on the same spot at any rendered size
            return obj.neuron(self.layer, self.index, x=(self.x + 0.5) / w, y=(self.y + 0.5) / h, batch=batch)
        if self.kind == "logit":
            return obj.logit(self.index, batch=batch)
        return obj.direction(self.layer, torch.tensor(self.vector), batch=batch, cossim_pow=self.cossim_pow or 0.0)


def channel_target(model, layer: str, channel: int) -> Target:
    info = model.layer(layer)
    if not 0 <= channel < info.channels:
        raise BlocklensError(f"channel {channel} is out of range for layer {info.name!r}, which has "
                             f"{info.channels} channels (0..{info.channels - 1})")
    return Target("channel", info.name, channel, label=f"{info.name}:{channel}")


def neuron_target(model, layer: str, channel: int, x: int, y: int) -> Target:
    info = model.layer(layer)
    base = channel_target(model, layer, channel)
    if not info.spatial:
        raise BlocklensError(f"layer {info.name!r} has shape {info.shape}: no positions, so no neuron "
                             f"{channel}@{x},{y}; ask for the channel ({info.name}:{channel}) instead")
    h, w = info.height, info.width
    if not (0 <= x < w and 0 <= y < h):
        raise BlocklensError(f"position ({x},{y}) is outside layer {info.name!r}, whose grid at the model's "
                             f"input size is {w} wide and {h} high (x 0..{w - 1}, y 0..{h - 1})")
    return Target("neuron", base.layer, channel, x, y, (h, w), label=f"{info.name}:{channel}@{x},{y}")


def logit_target(model, cls: int | str) -> Target:
    i = model.class_index(cls)
    return Target("logit", obj.OUTPUT, i, label=model.labels[i])


def direction_target(model, layer: str, vector, cossim_pow: float | None = None) -> Target:
    """A direction in ``layer``'s channel space; with ``cossim_pow`` scored as ``dot * max(0.1, cos)^cossim_pow``
    (the activation atlas's cells, whose store keys name the power)."""
    info = model.layer(layer)
    v = torch.as_tensor(vector, dtype=torch.float32).flatten()
    if v.numel() != info.channels:
        raise BlocklensError(f"direction has {v.numel()} components but layer {info.name!r} has "
                             f"{info.channels} channels")
    return Target("direction", info.name, -1, label=f"{info.name}:direction",
                  vector=tuple(float(a) for a in v), cossim_pow=None if cossim_pow is None else float(cossim_pow))


def parse_target(model, spec: "str | Target") -> Target:
    """A command-line target string (see the module docstring) -> a checked :class:`Target`."""
    if isinstance(spec, Target):
        return spec
    text = str(spec).strip()
    layer, sep, unit = text.rpartition(":")
    if not sep or not layer:
        raise BlocklensError(f"target {text!r} is not LAYER:CHANNEL, LAYER:CHANNEL@X,Y or logit:CLASS "
                             "(e.g. blocks.9:12, blocks.9:12@7,7, logit:282, 'logit:tiger cat')")
    if layer.lower() in ("logit", "logits", "class"):
        return logit_target(model, unit)
    m = _UNIT.match(unit.strip())
    if not m:
        raise BlocklensError(f"target {text!r}: {unit!r} is not CHANNEL or CHANNEL@X,Y (integers)")
    if m.group("x") is not None:
        return neuron_target(model, layer, int(m.group("channel")), int(m.group("x")), int(m.group("y")))
    return channel_target(model, layer, int(m.group("channel")))
