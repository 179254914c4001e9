"""Dead-ReLU rescue (Lucid's "redirected ReLU"), for ``nn.ReLU``, ``nn.ReLU6`` and ``nn.Hardtanh(0, 6)``.

Early in an optimization from a grey image, many units sit below zero (or above ReLU6's cap) for every pixel;
their true gradient is exactly zero and the image never moves. While the rescue is active, a clipped unit lets
the gradient through when the true gradient of that batch element is zero *everywhere* in the layer, except
where it would push the value further into the clip. Once any gradient flows the true one is used. The
render loop activates it for the first steps (16 by default, as in Lucid) and, once an image got no gradient at
all in a later step, for the rest of the run: Lucid's first 16 steps alone left units that are dead at the start
(blocks.15.depthwise.act of Lite0) at their starting noise for 240 of 256 steps; with a window of 16 steps after
each stuck step they relapsed every 17th step.

Where even the redirected gradient is zero for an element (every unit of its layer would be pushed further into
the clip: a unit whose objective only rises as an upstream unit falls, and that unit is already at zero), the
element gets the plain gradient: the image moves deeper into the region where the objective is at its maximum
(a margin), instead of staying the starting noise. Lite0's blocks.15.depthwise.act has such units (a depthwise
kernel of nine negative weights: the unit is highest, its batch-norm bias, wherever its input channel is silent).

Modules are patched with hooks, never edited: :func:`relu_rescue` is a context manager that removes every hook
on exit. Activations computed with ``torch.relu``/``F.relu`` inside a forward (not modules) are not rescued.
Register it *before* a :class:`~blocklens.probe.Probe` so the probe captures the rescued output.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn


class _RedirectedClip(torch.autograd.Function):
    """``clamp(x, 0, upper)`` whose backward redirects the gradient of elements with no true gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, upper: float | None, rescue: bool = True, through_cap: bool = False):
        ctx.save_for_backward(x)
        ctx.upper, ctx.rescue, ctx.through_cap = upper, rescue, through_cap
        return x.clamp(0.0, upper) if upper is not None else x.clamp_min(0.0)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        upper = ctx.upper
        # through_cap: above the cap the gradient is the pre-activation's (the objective keeps rising past it)
        inside = x > 0 if upper is None or ctx.through_cap else (x > 0) & (x < upper)
        true = g * inside
        if not ctx.rescue:
            return true, None, None, None
        flat = true.reshape(true.shape[0], -1) if true.dim() > 1 else true.reshape(1, -1)
        dead = ~flat.any(1)  # batch elements with no true gradient anywhere in this layer
        if not bool(dead.any()):
            return true, None, None, None
        # g is d(loss)/d(out) of a loss being minimized: g > 0 lowers the value, g < 0 raises it
        blocked = (x <= 0) & (g > 0)
        if upper is not None:
            blocked |= (x >= upper) & (g < 0)
        redirected = g * ~blocked
        per_element = (-1, *([1] * (g.dim() - 1))) if g.dim() > 1 else (-1,)
        # nothing left after the redirect either: the plain gradient (deeper into the clip: a margin)
        closed = dead & ~redirected.reshape(flat.shape).any(1)
        if bool(closed.any()):
            redirected = torch.where(closed.view(per_element), g, redirected)
        dead = dead.view(per_element)
        return torch.where(dead, redirected, true), None, None, None


def rescue_on(step: int, rescue_steps: int, stuck_at: int | None) -> bool:
    """Whether the rescue is on at ``step``: the first ``rescue_steps`` steps, and every step after ``stuck_at``
    (the first step in which an image got no gradient, if any); never when ``rescue_steps`` is 0 (switched off).
    It only ever changes the gradient of an image that has none of its own, so healthy images in the same batch
    are untouched (it costs time: about 1.6x per step while on)."""
    if rescue_steps <= 0:
        return False
    return step < rescue_steps or (stuck_at is not None and step > stuck_at)


def rectifier_cap(m: nn.Module) -> float | None | bool:
    """The clip of a rectifier module: None for ReLU, 6.0 for ReLU6; False when it is no rectifier."""
    if isinstance(m, nn.ReLU6):
        return 6.0
    if isinstance(m, nn.ReLU):
        return None
    if isinstance(m, nn.Hardtanh) and m.min_val == 0.0:
        return float(m.max_val)
    return False


class _Rescue:
    def __init__(self):
        self.active = False
        self.count = 0  # rectifier modules patched
        self.through_cap: set[int] = set()  # ids of capped modules whose gradient passes the cap (always on)
        self.last_out: dict[int, torch.Tensor] = {}  # their latest outputs


def capped_output(module: nn.Module, path: str) -> nn.Module | None:
    """The rectifier with a cap (ReLU6, Hardtanh(0, max)) that computes the output of submodule ``path``, if one
    does: the module itself, or the end of its chain of last children (timm's ``ConvBnAct`` ends in its ``act``).
    The render loop checks in its first forward pass that the layer's output really is that module's output."""
    modules = dict(module.named_modules())
    m = modules.get(path)
    while m is not None:
        if isinstance(rectifier_cap(m), float):
            return m
        children = list(m.children())
        m = children[-1] if children else None
    return None


@contextmanager
def relu_rescue(module: nn.Module, through_cap: Iterable[nn.Module] = ()) -> Iterator[_Rescue]:
    """Patch every rectifier module of ``module``; set ``.active`` on the yielded object to switch the rescue on.

    ``through_cap``: capped modules (see :func:`capped_output`) whose gradient also flows where the input is
    above the cap, at every step: an objective on a ReLU6 layer then keeps a gradient when the unit sits at 6
    (its value is read as the pre-activation's there), so saturated units still order their icons. Drop a
    module from ``.through_cap`` (its ``id``) to switch that off."""
    state = _Rescue()
    state.through_cap = {id(m) for m in through_cap}
    handles = []
    saved: dict[int, list[torch.Tensor]] = {}

    def pre_hook(mod, args):
        if not (state.active or id(mod) in state.through_cap) or not args or not isinstance(args[0], torch.Tensor):
            return None
        x = args[0]
        saved.setdefault(id(mod), []).append(x)
        if getattr(mod, "inplace", False):
            return (x.clone(),) + tuple(args[1:])  # the module's in-place op must not destroy our copy
        return None

    def make_post_hook(upper):
        def post_hook(mod, args, out):
            stack = saved.get(id(mod))
            through = id(mod) in state.through_cap
            if not (state.active or through) or not stack:
                return None
            x = stack.pop()
            y = _RedirectedClip.apply(x, upper, state.active, through)
            if through:
                state.last_out[id(mod)] = y
            return y
        return post_hook

    try:
        for m in module.modules():
            upper = rectifier_cap(m)
            if upper is False:
                continue
            handles.append(m.register_forward_pre_hook(pre_hook))
            handles.append(m.register_forward_hook(make_post_hook(upper)))
            state.count += 1
        yield state
    finally:
        for h in handles:
            h.remove()
        saved.clear()
        state.last_out.clear()
