"""Model specs: one string that names any model, read the same way by every entry point.

``load_model(spec, weights=None, device="cpu")`` (``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``) accepts:

- a zoo name: ``efficientnet_lite0`` (``blocklens models`` lists them);
- ``package.module:callable`` (the ``module:attr`` convention; ``attr`` may be dotted, ``mod:Class.build``):
  the module is imported (the current directory is on the path, as with ``python -m``) and the callable is
  called with no arguments. It may return a :class:`~blocklens.Model` (used as is) or an ``nn.Module``,
  which is wrapped with ImageNet normalization, ImageNet labels if it has 1000 outputs (else ``class i``) and
  input size 224; a module (or the callable) with an ``input_size`` attribute sets the size, one with a
  ``labels`` attribute (a list of names) sets the labels. Anything else (other statistics, a custom crop):
  return ``bl.wrap(net, ...)`` from the callable;
- ``path/to/model.pt2`` (or ``.pt``): a ``torch.export`` program (``torch.export.save``), unflattened with
  ``torch.export.unflatten`` so its submodules keep their names and forward hooks. Export it with a dynamic
  batch dimension; if height and width are static, inputs of any other size are resized to them. A
  TorchScript file is refused: ScriptModules do not run forward hooks, which blocklens needs to read layers;
- ``timm:NAME`` / ``torchvision:NAME``: the architecture, built without pretrained weights (nothing is
  downloaded); ``weights=FILE`` (a state dict: ``.pth``/``.pt``, or ``.safetensors``) gives it weights,
  without it the weights are random (a :class:`RandomWeightsWarning` says so).

``weights`` works with every form: the state dict is loaded into the built module (strictly; a mismatch is
summarized: missing and unexpected keys, the first shape mismatch). Modules are built with torch's random
generator seeded 0 (and restored afterwards), so a randomly initialized model is the same in every process:
precompute workers rebuild the model from the same spec and must get the same weights.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BlocklensError, closest
from .devices import resolve_device, to_device

SPEC_FORMS = ("a zoo name (blocklens models), package.module:callable, a torch.export file (.pt2), "
              "timm:NAME or torchvision:NAME (with --weights FILE)")
FILE_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".jit")


class RandomWeightsWarning(UserWarning):
    """A model was built without weights: its weights are random, so its pictures and numbers mean nothing."""


def load_model(spec: str | None = None, weights: str | os.PathLike | None = None,
               device: str | torch.device = "cpu"):
    """The model that ``spec`` names (see the module docstring), in eval mode with frozen weights, on
    ``device`` (``"auto"``: cuda when torch sees a GPU; see :func:`~blocklens.models.devices.resolve_device`, which
    raises for a device that is not here); ``weights``: a state dict file loaded into it. The result remembers ``spec`` and ``weights``
    (``model.spec``, ``model.weights``) so that worker processes can rebuild it."""
    from .zoo import DEFAULT_MODEL, ZOO

    if spec is None:
        spec = DEFAULT_MODEL
    if not isinstance(spec, str):
        raise BlocklensError(f"a model spec is a string ({SPEC_FORMS}); got {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise BlocklensError(f"empty model spec; give {SPEC_FORMS}")
    device = resolve_device(device)  # a device that is not here fails before the model is built
    weights_path = _weights_file(weights) if weights is not None else None
    kind, _, rest = text.partition(":")
    key = text.lower().replace("-", "_")
    if kind.lower() in ("timm", "torchvision") and rest:
        model = _from_hub(kind.lower(), rest.strip(), text, weights_path)
    elif key in ZOO:
        model = _from_zoo(key, weights_path)
    elif _looks_like_file(text):
        model = _from_file(text, weights_path)
    elif ":" in text:
        model = _from_callable(text, weights_path)
    else:
        from ..errors import unknown

        hint = f"a model is {SPEC_FORMS}"
        if "." in text and all(p.isidentifier() for p in text.split(".")):
            mod, _, attr = text.rpartition(".")
            hint += f"; for a function in a module write {mod}:{attr}"
        raise unknown("model", spec, ZOO, hint)
    model.module.requires_grad_(False)
    to_device(model, device)
    model.spec = spec
    model.weights = str(weights_path) if weights_path is not None else None
    return model


# -- the forms -------------------------------------------------------------------------------------------------
def _from_zoo(key: str, weights: Path | None):
    from .zoo import load_zoo_model

    model = load_zoo_model(key)
    if weights is not None:
        load_weights(model.module, weights, key)
    return model


def _from_callable(text: str, weights: Path | None):
    from .base import Model

    mod_name, _, attr = text.partition(":")
    mod_name, attr = mod_name.strip(), attr.strip()
    if not mod_name or not attr or not all(p.isidentifier() for p in mod_name.split(".") + attr.split(".")):
        raise BlocklensError(f"model spec {text!r} is not package.module:callable (dotted names of a module, "
                             f"then of a function or class in it, e.g. mypkg.nets:build)")
    module = _import(mod_name)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            where = mod_name + (":" + ".".join(attr.split(".")[:i]) if i else "")
            names = [n for n in dir(obj) if not n.startswith("_")]
            near = closest(part, names)
            listed = near or [n for n in names if callable(getattr(obj, n, None))][:12]
            raise BlocklensError(f"{where} has no attribute {part!r}" +
                                 (f"; closest: {', '.join(near)}" if near else
                                  f"; its callables: {', '.join(listed)}" if listed else ""))
        obj = getattr(obj, part)
    if not callable(obj):
        raise BlocklensError(f"{text} is a {type(obj).__name__}, not a callable: point the spec at a function "
                             "or class that builds the model, called with no arguments")
    try:
        with _seeded():
            built = obj()
    except BlocklensError:
        raise
    except Exception as e:
        raise BlocklensError(f"calling {text}() raised {type(e).__name__}: {e}") from e
    if isinstance(built, Model):
        if weights is not None:
            load_weights(built.module, weights, text)
        return built
    if not isinstance(built, nn.Module):
        raise BlocklensError(f"{text}() returned a {type(built).__name__}; it must return a torch.nn.Module or a "
                             "blocklens.Model (bl.wrap(net, ...))")
    if weights is not None:
        load_weights(built, weights, text)
    size = getattr(built, "input_size", None) or getattr(obj, "input_size", None) or 224
    labels = getattr(built, "labels", None) or getattr(obj, "labels", None)
    if not (labels == "imagenet" or (isinstance(labels, (list, tuple)) and labels
                                     and all(isinstance(s, str) for s in labels))):
        labels = None
    return _wrap(built, text, int(size), labels=labels)


def _from_hub(kind: str, name: str, text: str, weights: Path | None):
    if kind == "timm":
        try:
            import timm
        except ImportError:
            raise BlocklensError(f"{text} needs timm, which is not installed: pip install timm") from None
        try:
            with _seeded():
                net = timm.create_model(name, pretrained=False)
        except Exception as e:
            valid = _safe_list(getattr(timm, "list_models", None))
            near = closest(name, valid) if valid else []
            raise BlocklensError(f"timm cannot build {name!r} ({type(e).__name__}: {e})"
                                 + (f"; closest: {', '.join(near)}" if near else "")) from None
        cfg = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None) or {}
        shape = cfg.get("input_size") or (3, 224, 224)
        mean, std = cfg.get("mean"), cfg.get("std")
        size = int(shape[-1])
    else:
        try:
            import torchvision.models as tvm
        except ImportError:
            raise BlocklensError(f"{text} needs torchvision, which is not installed: pip install torchvision "
                                 "(the build that matches your torch, e.g. --index-url "
                                 "https://download.pytorch.org/whl/cpu)") from None
        valid = _safe_list(getattr(tvm, "list_models", None))
        if valid and name not in valid:
            near = closest(name, valid)
            raise BlocklensError(f"torchvision has no model {name!r}" +
                                 (f"; closest: {', '.join(near)}" if near else ""))
        try:
            with _seeded():
                net = tvm.get_model(name, weights=None)
        except Exception as e:
            raise BlocklensError(f"torchvision cannot build {name!r} ({type(e).__name__}: {e})") from None
        mean = std = None
        size = 299 if name.startswith("inception") else 224
    if not isinstance(net, nn.Module):
        raise BlocklensError(f"{text} built a {type(net).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(net, weights, text)
    else:
        warnings.warn(f"{text} has random weights (nothing is downloaded): give --weights FILE (weights=) "
                      "with a state dict for its pictures and numbers to mean anything", RandomWeightsWarning,
                      stacklevel=4)
    kw = {}
    if mean is not None and std is not None and len(mean) == 3 and len(std) == 3:
        kw = {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std)}
    return _wrap(net, text, size, **kw)


def _from_file(text: str, weights: Path | None):
    path = Path(text).expanduser()
    if not path.exists():
        raise BlocklensError(f"no model file {text!r} (a model spec ending in {path.suffix} is read as a file; "
                             f"model specs are {SPEC_FORMS})")
    if not path.is_file():
        raise BlocklensError(f"model spec {text!r} is a folder; give a torch.export file (.pt2)")
    kind = _archive_kind(path)
    if kind == "torchscript":
        raise BlocklensError(f"{text} is a TorchScript module: blocklens reads layers with forward hooks, which "
                             "ScriptModules do not run. Save the model with torch.export instead "
                             "(torch.export.save(torch.export.export(net, (x,), dynamic_shapes=...), 'model.pt2')), "
                             "or point --model at the Python code that builds it (package.module:callable, with "
                             "--weights FILE for a state dict)")
    if kind == "pickle":
        raise BlocklensError(f"{text} is a torch.save() pickle (a state dict or a whole module), not a model "
                             "program: give the architecture as timm:NAME, torchvision:NAME or "
                             f"package.module:callable and pass this file as --weights {text}; or save the model "
                             "with torch.export (.pt2)")
    if kind != "export":
        raise BlocklensError(f"{text} is not a torch.export program (torch.export.save) nor a PyTorch archive")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside load/unflatten
            warnings.simplefilter("ignore", DeprecationWarning)
            ep = torch.export.load(str(path))
            net = torch.export.unflatten(ep)
    except Exception as e:
        raise BlocklensError(f"cannot load the torch.export program {text}: {type(e).__name__}: {e}") from None
    size = _export_input(ep, text)
    _name_types(ep, net)
    if weights is not None:
        load_weights(net, weights, text)
    return _wrap(net, text, size or 224)


# -- helpers ---------------------------------------------------------------------------------------------------
def _wrap(net: nn.Module, name: str, size: int, labels=None, **kw):
    """``wrap`` with ImageNet labels for 1000 outputs. A program exported for one height and width refuses other
    sizes, so the model has ``fixed_size`` and feature visualization's inputs are resized to it."""
    from .base import wrap

    if labels is None:
        with torch.no_grad():
            out = net.eval()(torch.zeros(1, 3, size, size))
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[-1] == 1000:
            labels = "imagenet"
    return wrap(net, labels=labels, input_size=size, name=name, **kw)


def _export_input(ep, text: str) -> int | None:
    """The exported program's static input size (None when height and width are dynamic); refuses programs
    with a static batch size or an input that is not one image batch."""
    inputs = list(ep.graph_signature.user_inputs)
    shapes = {n.name: n.meta["val"].shape for n in ep.graph.nodes
              if n.op == "placeholder" and n.name in inputs and "val" in n.meta}
    if len(inputs) != 1 or inputs[0] not in shapes or len(shapes[inputs[0]]) != 4:
        raise BlocklensError(f"{text}: the exported program must take one (batch, 3, height, width) image tensor; "
                             f"it takes {len(inputs)} input(s)")
    b, _c, h, w = shapes[inputs[0]]
    if isinstance(b, int):
        raise BlocklensError(f"{text} was exported for batches of exactly {b}; blocklens runs batches of any size. "
                             "Export it with a dynamic batch dimension: torch.export.export(net, (x,), "
                             "dynamic_shapes=({0: torch.export.Dim('batch')},))")
    if isinstance(h, int) and isinstance(w, int):
        if h != w:
            raise BlocklensError(f"{text} was exported for {h}x{w} inputs; blocklens needs square inputs (export "
                                 "with dynamic height and width, or a square example)")
        return h
    return None


def _name_types(ep, net: nn.Module) -> None:
    """Give each unflattened submodule (an InterpreterModule) the name of the type it was (Conv2d, ReLU...),
    from the program's module stacks, so that layer listings say what each layer is."""
    found: dict[str, str] = {}
    for node in ep.graph.nodes:
        for value in (node.meta.get("nn_module_stack") or {}).values():
            try:
                path, kind = value
            except (TypeError, ValueError):
                continue
            name = kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]
            found.setdefault(str(path), name)
    for path, sub in net.named_modules():
        if path and path in found:
            sub._blocklens_type = found[path]


def _archive_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return "unknown"
    if any(n.endswith("archive_format") or n.endswith("serialized_exported_program.json") for n in names):
        return "export"
    if any("/code/" in n for n in names) or any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    return "unknown"


def _looks_like_file(text: str) -> bool:
    return text.lower().endswith(FILE_SUFFIXES) or (":" not in text and ("/" in text or os.sep in text)) or \
        (":" not in text and Path(text).is_file())


def _import(name: str):
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does: a module next to you imports
    importlib.invalidate_caches()  # files written since the last import (a notebook, a test) are seen
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise BlocklensError(f"no module named {e.name!r} (for the model spec {name}:...; looked in the current "
                                 f"directory {cwd} and sys.path; set PYTHONPATH or cd to where it is)") from None
        raise BlocklensError(f"importing {name} failed: {e}") from None
    except Exception as e:
        raise BlocklensError(f"importing {name} raised {type(e).__name__}: {e}") from None


class _seeded:
    """torch's generator seeded 0 inside, restored after: a random init is the same in every process."""

    def __enter__(self):
        self._state = torch.random.get_rng_state()
        torch.manual_seed(0)

    def __exit__(self, *exc):
        torch.random.set_rng_state(self._state)
        return False


def _safe_list(fn) -> list[str]:
    try:
        return list(fn()) if fn else []
    except Exception:
        return []


def _weights_file(weights) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BlocklensError(f"no weights file {str(weights)!r}" + (" (it is a folder)" if path.exists() else ""))
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only``); a checkpoint that holds
    it under ``state_dict`` or ``model`` is unwrapped."""
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise BlocklensError(f"{path} is a safetensors file: pip install safetensors to read it") from None
        try:
            return dict(load_file(str(path)))
        except Exception as e:
            raise BlocklensError(f"cannot read the safetensors file {path}: {e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BlocklensError(f"cannot read {path} as a state dict (torch.load(weights_only=True): {first}); save "
                             "model.state_dict() with torch.save, or use .safetensors") from None
    for k in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(k), dict):
            state = state[k]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BlocklensError(f"{path} does not hold a state dict (a dict of tensors); got {type(state).__name__}")
    return state


def load_weights(net: nn.Module, path: Path, what: str) -> None:
    """Load the state dict in ``path`` into ``net`` strictly; a mismatch is one error that summarizes it."""
    state = read_state_dict(path)
    own = net.state_dict()
    if state and own and not any(k in own for k in state) and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatch = next(((k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
                     if k in state and tuple(state[k].shape) != tuple(v.shape)), None)
    if missing or unexpected or mismatch:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_few(unexpected)})")
        if mismatch:
            k, theirs, ours = mismatch
            parts.append(f"first shape mismatch: {k} is {theirs} in the file but {ours} in the model")
        raise BlocklensError(f"weights {path} do not fit {what}: " + "; ".join(parts))
    try:
        net.load_state_dict(state, strict=True)
    except Exception as e:
        raise BlocklensError(f"weights {path} do not fit {what}: {e}") from None


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


__all__ = ["load_model", "load_weights", "read_state_dict", "RandomWeightsWarning", "SPEC_FORMS"]
