"""The probe: names the layers of any ``nn.Module`` and captures their activations and gradients.

Layer names
    A layer is one *call site* of a submodule, named by its module path (``model.named_modules()``):

    - ``blocks.3`` -- a module called once per forward;
    - ``layer1.0.relu#1`` -- the second call of a module that runs more than once in one forward (ResNet's
      reused ReLU). **A plain name of a reused module means its first call (``#0``)**; :func:`discover`
      lists every call as ``name#k`` so nothing is hidden;
    - ``encoder[1]`` -- element 1 of a module whose output is a tuple or list. **A plain name means
      element 0**; :func:`discover` lists tuple outputs as ``name[i]``;
    - both combine: ``cell#2[0]``.

Capture
    :class:`Probe` is a context manager that registers forward hooks on exactly the modules it needs and
    removes every one of them on exit, also when the forward or backward pass raised. Hooks the user added
    stay untouched. Captured values are never overwritten by later in-place operations (``ReLU(inplace=True)``,
    ``x += y``): without gradients the probe stores a copy; with gradients it keeps the module's output in the
    autograd graph and hands a copy downstream, so in-place work happens on the copy. ``Probe.run(x)`` stops
    the forward pass right after the deepest requested call (its result is then ``None``).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .errors import BlocklensError, unknown

_NAME = re.compile(r"^(?P<path>[^#\[\]]*)(?:#(?P<call>\d+))?(?:\[(?P<index>\d+)\])?$")


@dataclass(frozen=True)
class LayerInfo:
    """One named call site, with its output shape for one example at the model's input size.

    ``shape`` excludes the batch dimension: ``(C, H, W)`` for conv layers, ``(C,)`` for vectors.
    """

    name: str
    module: str
    call: int
    index: int | None
    type: str
    shape: tuple[int, ...]
    order: int
    calls: int = 1

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def spatial(self) -> bool:
        """True when the layer has positions (``(C, H, W)``)."""
        return len(self.shape) == 3

    @property
    def height(self) -> int | None:
        return self.shape[1] if self.spatial else None

    @property
    def width(self) -> int | None:
        return self.shape[2] if self.spatial else None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "module": self.module, "call": self.call, "index": self.index,
                "type": self.type, "shape": list(self.shape), "channels": self.channels, "calls": self.calls}


@dataclass(frozen=True)
class _Site:
    module: str
    call: int
    index: int | None


def parse_name(name: str) -> tuple[str, int | None, int | None]:
    """``"a.b#1[0]"`` -> ``("a.b", 1, 0)``; missing parts are ``None``."""
    m = _NAME.match(name.strip())
    if not m or not m.group("path"):
        raise BlocklensError(f"malformed layer name {name!r}; expected a module path such as 'blocks.3', "
                             "optionally with '#CALL' (which call of a reused module) and '[INDEX]' "
                             "(which element of a tuple output)")
    call, index = m.group("call"), m.group("index")
    return m.group("path"), None if call is None else int(call), None if index is None else int(index)


def _tensor_elements(out: Any) -> list[tuple[int | None, torch.Tensor]]:
    if isinstance(out, torch.Tensor):
        return [(None, out)]
    if isinstance(out, (tuple, list)):
        return [(i, o) for i, o in enumerate(out) if isinstance(o, torch.Tensor)]
    return []


def discover(module: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Run ``module(example)`` once (no gradients) and list every call site with a tensor output, in the
    order they ran. ``example`` is one batch; shapes are reported without the batch dimension."""
    records: list[tuple[str, int, Any]] = []
    counts: dict[str, int] = defaultdict(int)
    handles = []

    def make_hook(path: str):
        def hook(_mod, _inp, out):
            records.append((path, counts[path], [(i, tuple(t.shape[1:])) for i, t in _tensor_elements(out)]))
            counts[path] += 1
        return hook

    try:
        for path, sub in module.named_modules():
            if path:
                handles.append(sub.register_forward_hook(make_hook(path)))
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()

    # a module may name the type it stands for (an unflattened torch.export program's InterpreterModules do)
    types = {p: getattr(m, "_blocklens_type", None) or type(m).__name__ for p, m in module.named_modules()}
    infos: list[LayerInfo] = []
    for path, call, elems in records:
        multi_call = counts[path] > 1
        for index, shape in elems:
            tuple_out = index is not None
            name = path + (f"#{call}" if multi_call else "") + (f"[{index}]" if tuple_out else "")
            infos.append(LayerInfo(name=name, module=path, call=call, index=index, type=types[path],
                                   shape=shape, order=len(infos), calls=counts[path]))
    return infos


class LayerTable:
    """The named layers of one model, with name resolution that explains its failures."""

    def __init__(self, infos: Sequence[LayerInfo], module_paths: Iterable[str]):
        self.infos = list(infos)
        self.by_name = {i.name: i for i in self.infos}
        self.by_site = {(i.module, i.call, i.index): i for i in self.infos}
        self.module_paths = set(module_paths)

    def __iter__(self):
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, name: str) -> LayerInfo:
        return self.resolve(name)

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except BlocklensError:
            return False
        return True

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.infos]

    def resolve(self, name: str) -> LayerInfo:
        """The :class:`LayerInfo` for ``name`` (see the module docstring for the grammar)."""
        if isinstance(name, LayerInfo):
            return name
        if name in self.by_name:
            return self.by_name[name]
        path, call, index = parse_name(name)
        if path not in self.module_paths:
            raise unknown("layer", name, self.names, hint="'blocklens layers' lists them all")
        site = (path, call or 0, index)
        if site not in self.by_site and index is None:
            site = (path, call or 0, 0)  # a tuple output: plain name means element 0
        if site not in self.by_site:
            calls = [i.name for i in self.infos if i.module == path]
            if not calls:
                raise BlocklensError(f"layer {name!r} did not run in a forward pass at the model's input size "
                                     "or has no tensor output; choose another layer")
            raise unknown("call or element of layer", name, calls)
        return self.by_site[site]


class _StopForward(Exception):
    """Raised from a hook to end the forward pass after the deepest requested layer."""


@dataclass
class Probe:
    """Capture activations (and, with ``grad=True``, gradients) of ``layers`` of ``module``.

    >>> with Probe(model.module, [model.layers["blocks.3"]]) as probe:   # doctest: +SKIP
    ...     probe.run(x)                          # stops after blocks.3
    ...     a = probe.activations["blocks.3"]     # (B, 40, 28, 28)

    With ``grad=True`` the captured tensors stay in the autograd graph (compute an objective from them and
    differentiate), and ``probe.gradients[name]`` is filled by any backward pass that reaches them.

    ``edit`` maps layer names to functions ``tensor -> tensor``: the layer's output is replaced by the function's
    result, which is what is captured and what the rest of the forward pass sees (an intervention: scaling a
    layer's activations along a path, zeroing channels, ...).
    """

    module: nn.Module
    layers: Sequence[LayerInfo]
    grad: bool = False
    edit: dict[str, Any] = field(default_factory=dict)
    activations: dict[str, torch.Tensor] = field(default_factory=dict, init=False)
    gradients: dict[str, torch.Tensor] = field(default_factory=dict, init=False)

    def __post_init__(self):
        self._handles: list[Any] = []
        self._sites: dict[str, list[LayerInfo]] = defaultdict(list)
        for info in self.layers:
            self._sites[info.module].append(info)
        self._counts: dict[str, int] = defaultdict(int)
        self._stopping = False
        self._pending: set[str] = set()
        self._active = False

    # -- context management: every hook added here is removed in __exit__, whatever happened --------------
    def __enter__(self) -> "Probe":
        if self._active:
            raise BlocklensError("this Probe is already in use; create a new one")
        modules = dict(self.module.named_modules())
        try:
            self._handles.append(self.module.register_forward_pre_hook(self._reset))
            for path in self._sites:
                self._handles.append(modules[path].register_forward_hook(self._make_hook(path)))
        except BaseException:
            self._remove()
            raise
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._active = False

    # -- hooks ------------------------------------------------------------------------------------------------
    def _reset(self, _mod, _inp) -> None:
        self._counts.clear()
        self._pending = {i.name for i in self.layers}

    def _make_hook(self, path: str):
        wanted = self._sites[path]

        def hook(_mod, _inp, out):
            call = self._counts[path]
            self._counts[path] += 1
            elems = dict(_tensor_elements(out))
            new: dict[int | None, torch.Tensor] = {}  # element -> what downstream sees instead
            for info in wanted:
                if info.call != call:
                    continue
                key = info.index if info.index in elems else (None if None in elems else info.index)
                if key not in elems:
                    raise BlocklensError(f"layer {info.name!r}: output has no tensor element {info.index}")
                t = new.get(key, elems[key])
                if info.name in self.edit:
                    t = new[key] = self.edit[info.name](t)
                if self.grad:
                    # keep `t` in the graph untouched; downstream gets a copy, so in-place ops land on the copy
                    new[key] = t.clone()
                    if t.requires_grad:
                        t.register_hook(self._grad_hook(info.name))
                    self.activations[info.name] = t
                else:
                    self.activations[info.name] = t.detach().clone()
                self._pending.discard(info.name)
            if self._stopping and not self._pending:
                raise _StopForward
            if not new:
                return None
            if None in new:
                return new[None]
            items = list(out)
            for k, v in new.items():
                items[k] = v
            if isinstance(out, tuple):
                return type(out)(*items) if hasattr(out, "_fields") else tuple(items)
            return items
        return hook

    def _grad_hook(self, name: str):
        def hook(g):
            self.gradients[name] = g
        return hook

    # -- running ----------------------------------------------------------------------------------------------
    def run(self, x: torch.Tensor, stop: bool = True):
        """``module(x)``, ended right after the last requested layer when ``stop``; returns the module's
        output, or ``None`` when the pass was stopped early."""
        if not self._active:
            raise BlocklensError("Probe.run() must be called inside 'with Probe(...)'")
        self._stopping = stop
        try:
            return self.module(x)
        except _StopForward:
            return None
        finally:
            self._stopping = False
