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

Layouts
    Every layer has a ``layout`` that says how its output is laid out, found by :func:`discover`:

    - ``"chw"``: a conv map ``(C, H, W)``;
    - ``"hwc"``: a channels-last map ``(H, W, C)`` (Swin stages, the inside of ConvNeXt blocks);
    - ``"tokens"``: a token sequence ``(N, C)`` whose last ``H * W`` tokens are a square patch grid, after
      ``prefix_tokens`` extra tokens (CLS, registers, distillation), which are held apart;
    - ``"vector"``: ``(C,)``;
    - ``"other"``: anything else (attention internals such as ``(heads, tokens, dim)``): listed, never
      treated as positions.

    ``LayerInfo.shape`` is the *canonical* shape, ``(C, H, W)`` for the three spatial layouts, and the probe
    hands every analysis canonical activations ``(B, C, H, W)``: it permutes channels-last maps and folds the
    grid tokens into a map (prefix tokens dropped). An edit works on the canonical tensor and the probe puts
    its result back in the module's own layout (prefix tokens kept as they were). ``native_shape`` is the
    module's own output shape.

    The layout is found by running the module at two input sizes (the second one not square): dimensions that
    follow the input's height and width are positions. A model that accepts only one input size (a ViT) is
    read from the shapes alone (a square grid plus at most 8 extra tokens, ``num_prefix_tokens`` where the
    model declares it); :attr:`LayerTable.fixed_size` records which way it went.

Capture
    :class:`Probe` is a context manager that registers forward hooks on exactly the modules it needs and
    removes every one of them on exit, also when the forward or backward pass raised. Hooks the user added
    stay untouched. Captured values are never overwritten by later in-place operations (``ReLU(inplace=True)``,
    ``x += y``): without gradients the probe stores a copy; with gradients it keeps the module's output in the
    autograd graph and hands a copy downstream, so in-place work happens on the copy; an edited output is always
    handed downstream as a copy too (a replacement the caller holds, or a leaf that requires grad, must never be
    modified by ``x += y`` further on). ``Probe.run(x)`` stops the forward pass right after the deepest
    requested call (its result is then ``None``).
"""
from __future__ import annotations

import math
import re
import weakref
from collections import Counter
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .errors import BlocklensError, unknown

_NAME = re.compile(r"^(?P<path>[^#\[\]]*)(?:#(?P<call>\d+))?(?:\[(?P<index>\d+)\])?$")


LAYOUTS = ("chw", "hwc", "tokens", "vector", "other")
SPATIAL_LAYOUTS = ("chw", "hwc", "tokens")


@dataclass(frozen=True)
class LayerInfo:
    """One named call site, with its output shape for one example at the model's input size.

    ``shape`` is canonical and excludes the batch dimension: ``(C, H, W)`` for the spatial layouts (``chw``,
    ``hwc``, ``tokens``), ``(C,)`` for vectors, the module's own shape otherwise; ``native_shape`` is the
    module's own output shape; ``layout`` is one of :data:`LAYOUTS` (see the module docstring).
    """

    name: str
    module: str
    call: int
    index: int | None
    type: str
    shape: tuple[int, ...]
    order: int
    calls: int = 1
    layout: str = "chw"
    native_shape: tuple[int, ...] | None = None
    prefix_tokens: int = 0

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def spatial(self) -> bool:
        """True when the layer has positions (canonical ``(C, H, W)``)."""
        return self.layout in SPATIAL_LAYOUTS and len(self.shape) == 3

    @property
    def height(self) -> int | None:
        return self.shape[1] if self.spatial else None

    @property
    def width(self) -> int | None:
        return self.shape[2] if self.spatial else None

    @property
    def positions(self) -> int:
        """``H * W`` for spatial layers, else 0."""
        return self.shape[1] * self.shape[2] if self.spatial else 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "module": self.module, "call": self.call, "index": self.index,
                "type": self.type, "shape": list(self.shape), "channels": self.channels, "calls": self.calls,
                "layout": self.layout, "native_shape": list(self.native_shape or self.shape),
                "prefix_tokens": self.prefix_tokens}

    # -- the canonical view -------------------------------------------------------------------------------------
    def to_canonical(self, t: torch.Tensor) -> torch.Tensor:
        """The module's output ``(B, *native_shape)`` -> canonical ``(B, *shape)``."""
        if self.layout == "hwc":
            return t.permute(0, 3, 1, 2)
        if self.layout == "tokens":
            c, h, w = self.shape
            return t[:, self.prefix_tokens:].transpose(1, 2).reshape(t.shape[0], c, h, w)
        return t

    def to_native(self, c: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """A canonical tensor ``(B', *shape)`` -> the module's layout; ``original`` (the module's own output)
        supplies the prefix tokens of a token layer, broadcast to the batch ``B'``."""
        if self.layout == "hwc":
            return c.permute(0, 2, 3, 1)
        if self.layout == "tokens":
            grid = c.flatten(2).transpose(1, 2)
            if not self.prefix_tokens:
                return grid
            prefix = original[:, :self.prefix_tokens].to(grid.dtype)
            return torch.cat([prefix.expand(grid.shape[0], *prefix.shape[1:]), grid], dim=1)
        return c


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


def _record(module: nn.Module, example: torch.Tensor) -> list[tuple[str, int, list]]:
    """Run ``module(example)`` once (no gradients) with a hook on every submodule: ``(path, call, [(element,
    shape without batch)])`` per call, in the order they ran. Hooks are removed whatever happens."""
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
    return records


def _follows(n1: int, n2: int, ratio: float) -> bool:
    """Does a size ``n1`` at the first input become ``n2`` when the input grows by ``ratio``?"""
    want = n1 * ratio
    return n2 != n1 and abs(n2 - want) <= max(1.0, 0.15 * want)


def _token_grid(n1: int, n2: int | None, ratios: tuple[float, float] | None,
                prefix_hint: int | None) -> tuple[int, int] | None:
    """``(prefix, side)`` when ``n1`` tokens are ``prefix`` extra tokens plus a ``side x side`` grid (and, when
    seen at a second input size, ``n2`` tokens are the same prefix plus the grid grown by ``ratios``)."""
    # the model's own count first; then none (a patch embedding, before the CLS token joins), then up to 8
    candidates = list(dict.fromkeys(([prefix_hint] if prefix_hint is not None else []) + list(range(0, 9))))
    for p in candidates:
        side = math.isqrt(max(n1 - p, 0))
        if side < 2 or side * side != n1 - p:
            continue
        if n2 is None:
            return p, side
        gh, gw = n2 - p, None
        for h2 in range(max(1, math.floor(side * ratios[0]) - 1), math.ceil(side * ratios[0]) + 2):
            if gh % h2 == 0 and _follows(side, h2, ratios[0]) and _follows(side, gh // h2, ratios[1]):
                gw = gh // h2
                break
        if gw is not None:
            return p, side
    return None


def _classify(shape: tuple[int, ...], shape2: tuple[int, ...] | None, ratios: tuple[float, float] | None,
              prefix_hint: int | None, module_type: str) -> tuple[str, tuple[int, ...], int]:
    """``(layout, canonical shape, prefix tokens)`` of one output (see the module docstring)."""
    if len(shape) == 1:
        return "vector", shape, 0
    if shape2 is not None and len(shape2) == len(shape):
        if len(shape) == 3:
            a, b, c = shape
            if _follows(b, shape2[1], ratios[0]) and _follows(c, shape2[2], ratios[1]):
                return "chw", shape, 0
            if _follows(a, shape2[0], ratios[0]) and _follows(b, shape2[1], ratios[1]):
                return "hwc", (c, a, b), 0
            if shape == shape2 and b == c == 1:
                return "chw", shape, 0
        if len(shape) == 2 and shape2[1] == shape[1]:
            grid = _token_grid(shape[0], shape2[0], ratios, prefix_hint)
            if grid:
                return "tokens", (shape[1], grid[1], grid[1]), grid[0]
        return "other", shape, 0
    # one input size only (a model that accepts no other): read the shapes
    if len(shape) == 2:
        grid = _token_grid(shape[0], None, None, prefix_hint)
        if grid:
            return "tokens", (shape[1], grid[1], grid[1]), grid[0]
    if len(shape) == 3:
        a, b, c = shape
        channels_last = module_type in ("LayerNorm", "Linear", "Permute", "GELU")
        if a == b and (c != a or channels_last):
            return "hwc", (c, a, b), 0
        if b == c:
            return "chw", shape, 0
    return "other", shape, 0


def discover(module: nn.Module, example: torch.Tensor, example2: torch.Tensor | None = None,
             prefix_tokens: int | None = None) -> list[LayerInfo]:
    """Run ``module(example)`` once (no gradients) and list every call site with a tensor output, in the
    order they ran, with its layout. ``example`` is one batch; shapes are reported without the batch dimension.

    ``example2`` (the same batch at another, non-square size) tells positions from channels: a dimension that
    follows the input's height or width is a position. If the module refuses it (a fixed input size), layouts
    are read from the shapes at ``example`` alone. ``prefix_tokens`` fixes the number of extra tokens of token
    layers (default: the module's ``num_prefix_tokens`` attribute where it has one, else inferred)."""
    return discover_layers(module, example, example2, prefix_tokens)[0]


def discover_layers(module: nn.Module, example: torch.Tensor, example2: torch.Tensor | None = None,
                    prefix_tokens: int | None = None) -> tuple[list[LayerInfo], bool]:
    """:func:`discover`, and whether the module refused ``example2`` (then it has a fixed input size)."""
    records = _record(module, example)
    second: dict[tuple, tuple] | None = None
    ratios = None
    refused = False
    if example2 is not None:
        try:
            rec2 = _record(module, example2)
        except Exception:  # a model with a fixed input size (or one that breaks at other sizes)
            rec2, refused = None, True
        if rec2 is not None:
            second = {(p, c, i): sh for p, c, elems in rec2 for i, sh in elems}
            ratios = (example2.shape[-2] / example.shape[-2], example2.shape[-1] / example.shape[-1])
    if prefix_tokens is None:
        hint = getattr(module, "num_prefix_tokens", None)
        prefix_tokens = int(hint) if isinstance(hint, int) else None

    counts = Counter(path for path, _, _ in records)
    # a module may name the type it stands for (an unflattened torch.export program's InterpreterModules do)
    types = {p: getattr(m, "_blocklens_type", None) or type(m).__name__ for p, m in module.named_modules()}
    infos: list[LayerInfo] = []
    for path, call, elems in records:
        multi_call = counts[path] > 1
        for index, shape in elems:
            tuple_out = index is not None
            name = path + (f"#{call}" if multi_call else "") + (f"[{index}]" if tuple_out else "")
            shape2 = second.get((path, call, index)) if second is not None else None
            layout, canonical, prefix = _classify(shape, shape2, ratios, prefix_tokens, types[path])
            infos.append(LayerInfo(name=name, module=path, call=call, index=index, type=types[path],
                                   shape=canonical, order=len(infos), calls=counts[path], layout=layout,
                                   native_shape=shape, prefix_tokens=prefix))
    if second is None:
        infos = _attention_shapes_apart(infos)
    return infos, refused


def _attention_shapes_apart(infos: list[LayerInfo]) -> list[LayerInfo]:
    """Read from shapes alone, ``(heads, N, N)`` attention maps look like conv maps: where the model has token
    layers of ``N`` tokens, a "map" whose side is ``N`` is an attention internal ("other")."""
    from dataclasses import replace

    counts = {i.native_shape[0] for i in infos if i.layout == "tokens"}
    if not counts:
        return infos
    return [replace(i, layout="other", shape=i.native_shape, prefix_tokens=0)
            if i.layout in ("chw", "hwc") and set(i.native_shape[1:] if i.layout == "chw" else i.native_shape[:2])
            & counts else i for i in infos]


class LayerTable:
    """The named layers of one model, with name resolution that explains its failures."""

    def __init__(self, infos: Sequence[LayerInfo], module_paths: Iterable[str], fixed_size: bool = False):
        self.infos = list(infos)
        self.fixed_size = fixed_size  # the model refused a second input size: layouts were read from shapes
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


def _check_edit(info: LayerInfo, t) -> None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape[1:]) != tuple(info.shape):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise BlocklensError(f"an edit of layer {info.name!r} returned {got}; expected (batch, "
                             f"{', '.join(map(str, info.shape))}), the layer's canonical ({info.layout}) shape")


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
                native = new.get(key, elems[key])
                t = info.to_canonical(native)
                edited = info.name in self.edit
                if edited:
                    t = self.edit[info.name](t)
                    _check_edit(info, t)
                if self.grad:
                    # keep `t` in the graph untouched; downstream gets a copy derived from it (so gradients reach
                    # `t`, and in-place ops land on the copy)
                    new[key] = info.to_native(t, native).clone()
                    if t.requires_grad:
                        t.register_hook(self._grad_hook(info.name))
                    self.activations[info.name] = t
                else:
                    if edited:  # never hand downstream the caller's replacement (or a leaf) to modify in place
                        new[key] = info.to_native(t, native).clone()
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
        # the hook lives in the autograd graph, which the probe holds (its activations): a strong reference back
        # to the probe would make a cycle through C++ that Python's gc never frees, keeping the whole graph alive
        ref = weakref.ref(self)

        def hook(g):
            probe = ref()
            if probe is not None:
                probe.gradients[name] = g
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
