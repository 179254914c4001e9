"""Objectives: what a feature visualization maximizes.

An :class:`Objective` maps a :class:`Context` (the captured activations of the layers it declares, and the
images being optimized) to one value **per batch element**, a tensor of shape ``(B,)``. The render loop
maximizes the sum. Objectives compose with ``+ - * /``, unary ``-`` and scalars, and the result declares the
union of the layers its parts read, so the render loop hooks exactly those and can stop the forward pass
after the deepest one.

Every unit objective takes ``batch``: ``None`` applies it to every image of the batch; an integer binds it to
that one image (the value is zero for the others). Many objectives bound to different elements, added
together, render many units in one batch with one backward pass.

>>> obj = channel("blocks.3", 5, batch=0) + channel("blocks.3", 7, batch=1)   # two icons, one batch
>>> obj = channel("blocks.9", 12) - 1e-3 * total_variation()                  # a regularized channel
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

#: The pseudo-layer name of the model's output (logits).
OUTPUT = "<output>"


@dataclass
class Context:
    """What an objective can read at one optimization step."""

    acts: dict[str, torch.Tensor]   # layer name (as the objective declared it) -> (B, C[, H, W])
    images: torch.Tensor            # (B, C, H, W) images in [0, 1] before transforms (C = 4 with alpha)

    @property
    def batch(self) -> int:
        return self.images.shape[0]

    def layer(self, name: str) -> torch.Tensor:
        return self.acts[name]


class Objective:
    """A callable ``Context -> (B,)`` tensor with the layers it reads; composes with ``+ - * /``."""

    def __init__(self, fn: Callable[[Context], torch.Tensor], layers: Sequence[str] = (), name: str = "objective"):
        self.fn = fn
        self.layers = frozenset(layers)
        self.name = name

    def __call__(self, ctx: Context) -> torch.Tensor:
        value = self.fn(ctx)
        if value.dim() == 0:
            value = value.expand(ctx.batch)
        return value

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    @property
    def needs_output(self) -> bool:
        return OUTPUT in self.layers

    # -- algebra ------------------------------------------------------------------------------------------------
    def _combine(self, other, op, symbol: str, reverse: bool = False) -> "Objective":
        if isinstance(other, Objective):
            a, b = (other, self) if reverse else (self, other)
            return Objective(lambda ctx: op(a(ctx), b(ctx)), a.layers | b.layers, f"({a.name} {symbol} {b.name})")
        if isinstance(other, (int, float)):
            if reverse:
                return Objective(lambda ctx: op(other, self(ctx)), self.layers, f"({other:g} {symbol} {self.name})")
            return Objective(lambda ctx: op(self(ctx), other), self.layers, f"({self.name} {symbol} {other:g})")
        return NotImplemented

    def __add__(self, o):
        return self._combine(o, operator.add, "+")

    def __radd__(self, o):
        if o == 0:  # so sum([...]) works
            return self
        return self._combine(o, operator.add, "+", reverse=True)

    def __sub__(self, o):
        return self._combine(o, operator.sub, "-")

    def __rsub__(self, o):
        return self._combine(o, operator.sub, "-", reverse=True)

    def __mul__(self, o):
        return self._combine(o, operator.mul, "*")

    def __rmul__(self, o):
        return self._combine(o, operator.mul, "*", reverse=True)

    def __truediv__(self, o):
        return self._combine(o, operator.truediv, "/")

    def __rtruediv__(self, o):
        return self._combine(o, operator.truediv, "/", reverse=True)

    def __neg__(self):
        return Objective(lambda ctx: -self(ctx), self.layers, f"-{self.name}")


def _bind(values: torch.Tensor, batch: int | None) -> torch.Tensor:
    """Keep element ``batch`` of a ``(B,)`` vector and zero the rest (all of it when ``batch`` is None)."""
    if batch is None:
        return values
    if not -values.shape[0] <= batch < values.shape[0]:
        raise IndexError(f"objective bound to batch element {batch}, but the batch has {values.shape[0]} images")
    mask = torch.zeros_like(values)
    mask[batch] = 1.0
    return values * mask


def _suffix(batch: int | None) -> str:
    return "" if batch is None else f" [b{batch}]"


def _position(a: torch.Tensor, x: float | int | None, y: float | int | None) -> torch.Tensor:
    """``a[:, :, y, x]`` with ``x``/``y`` as an index (int) or a fraction of the width/height (float in [0, 1));
    ``None`` means the centre."""
    h, w = a.shape[-2:]

    def idx(v, n):
        if v is None:
            return n // 2
        if isinstance(v, float):
            return min(n - 1, max(0, int(v * n)))
        return v

    return a[:, :, idx(y, h), idx(x, w)]


def channel(layer: str, n: int, batch: int | None = None) -> Objective:
    """Mean activation of channel ``n`` of ``layer`` over all positions."""
    def fn(ctx):
        a = ctx.layer(layer)
        v = a[:, n].flatten(1).mean(1) if a.dim() > 2 else a[:, n]
        return _bind(v, batch)
    return Objective(fn, [layer], f"channel {layer}:{n}{_suffix(batch)}")


def neuron(layer: str, n: int, x: float | int | None = None, y: float | int | None = None,
           batch: int | None = None) -> Objective:
    """Activation of channel ``n`` at one position: ``x``, ``y`` as indices, as fractions of the width and
    height (floats), or the centre (None). Fractions keep the same spot when the rendered size changes."""
    def fn(ctx):
        a = ctx.layer(layer)
        if a.dim() != 4:
            raise ValueError(f"neuron objective needs a spatial layer; {layer!r} has shape {tuple(a.shape)}")
        return _bind(_position(a, x, y)[:, n], batch)
    return Objective(fn, [layer], f"neuron {layer}:{n}@{x},{y}{_suffix(batch)}")


def direction(layer: str, vector: torch.Tensor, batch: int | None = None, cossim_pow: float = 0.0,
              x: float | int | None = None, y: float | int | None = None, spatial: str = "mean") -> Objective:
    """How far ``layer`` points along ``vector``: the dot product of the activation vector at each position with
    ``vector`` (``(C,)``, or ``(B, C)``: one direction per image), averaged over positions; times
    ``max(0.1, cos)^cossim_pow`` when ``cossim_pow > 0`` (which rewards pointing the same way, not only far).
    With ``spatial="point"`` only one position counts (``x``, ``y`` as in :func:`neuron`)."""
    vector = torch.as_tensor(vector, dtype=torch.float32)

    def fn(ctx):
        a = ctx.layer(layer)
        v = vector.to(a.device)
        if v.dim() == 1:
            v = v.unsqueeze(0)
        if a.dim() == 4:
            feats = _position(a, x, y).unsqueeze(-1) if spatial == "point" else a.flatten(2)  # (B, C, P)
        else:
            feats = a.unsqueeze(-1)
        vv = v.unsqueeze(-1)  # (1 or B, C, 1)
        dot = (feats * vv).sum(1)  # (B, P)
        if cossim_pow > 0:
            cos = dot / (feats.norm(dim=1) * vv.norm(dim=1) + 1e-6)
            dot = dot * cos.clamp_min(0.1) ** cossim_pow
        return _bind(dot.mean(1), batch)

    return Objective(fn, [layer], f"direction {layer}{_suffix(batch)}")


def logit(cls: int, batch: int | None = None) -> Objective:
    """The model's output (pre-softmax) for class index ``cls``."""
    def fn(ctx):
        return _bind(ctx.layer(OUTPUT)[:, cls], batch)
    return Objective(fn, [OUTPUT], f"logit {cls}{_suffix(batch)}")


def diversity(layer: str) -> Objective:
    """Negative similarity of each image's style (normalized Gram matrix of ``layer``) to the other images'
    (Lucid's diversity term); maximize it next to a unit objective to get several different views of a unit."""
    def fn(ctx):
        a = ctx.layer(layer)
        b = a.shape[0]
        if b < 2:
            return torch.zeros(b, device=a.device)
        f = a.flatten(2)  # (B, C, P)
        gram = f @ f.transpose(1, 2)
        gram = gram.flatten(1)
        gram = gram / (gram.norm(dim=1, keepdim=True) + 1e-10)
        sim = gram @ gram.T  # (B, B)
        off_diag = sim.sum(1) - sim.diagonal()
        return -off_diag / b
    return Objective(fn, [layer], f"diversity {layer}")


def total_variation(batch: int | None = None) -> Objective:
    """Sum of absolute differences between neighbouring pixels (a penalty: subtract it)."""
    def fn(ctx):
        im = ctx.images[:, :3]
        tv = (im[..., 1:, :] - im[..., :-1, :]).abs().flatten(1).sum(1) + \
             (im[..., :, 1:] - im[..., :, :-1]).abs().flatten(1).sum(1)
        return _bind(tv, batch)
    return Objective(fn, [], f"total_variation{_suffix(batch)}")


def l1(constant: float = 0.5, batch: int | None = None) -> Objective:
    """Sum of ``|image - constant|`` over the RGB pixels (a penalty: subtract it)."""
    def fn(ctx):
        return _bind((ctx.images[:, :3] - constant).abs().flatten(1).sum(1), batch)
    return Objective(fn, [], f"l1{_suffix(batch)}")


def alpha_mean(batch: int | None = None) -> Objective:
    """Mean opacity of an RGBA image (penalize it to keep only what the unit needs)."""
    def fn(ctx):
        if ctx.images.shape[1] != 4:
            raise ValueError("alpha_mean needs an image with an alpha channel (render with alpha=True)")
        return _bind(ctx.images[:, 3].flatten(1).mean(1), batch)
    return Objective(fn, [], f"alpha_mean{_suffix(batch)}")
