"""Where a model runs: :func:`resolve_device` turns ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device that is
here (one error naming what was asked and what is available when it is not), :func:`to_device` moves a model there.

Every entry point that runs a model (``load_model``, the workers, the command line's ``--device``, the app) goes
through these two, so the rules are the same everywhere: ``auto`` (or None) is ``cuda`` when torch sees a GPU,
else ``cpu``.
"""
from __future__ import annotations

import re

import torch

from ..errors import BlocklensError

#: What ``--device`` and ``device=`` take, in words (for help texts and errors).
DEVICE_FORMS = "auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N"

_CUDA = re.compile(r"cuda(?::(\d+))?")


def available_devices() -> list[str]:
    """The devices torch can use here: ``cpu``, then ``cuda:0`` ... for each GPU it sees."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(n)]


def check_device_name(device: str | torch.device | None) -> str:
    """``device`` as a lower-case name (``"auto"`` for None) when it has one of the forms :data:`DEVICE_FORMS`;
    raises otherwise. Says nothing about whether it is here (see :func:`resolve_device`)."""
    if device is None:
        return "auto"
    name = str(device).strip().lower()
    if name in ("auto", "cpu") or _CUDA.fullmatch(name):
        return name
    raise BlocklensError(f"device must be {DEVICE_FORMS}; got {str(device)!r}")


def _why_no_gpu() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch"
    return (f"this torch ({torch.__version__}, CUDA {torch.version.cuda}) sees no GPU: no driver, or "
            "CUDA_VISIBLE_DEVICES hides them")


def resolve_device(device: str | torch.device | None = "auto") -> str:
    """The device to run on: ``auto``/None gives ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``, ``cuda``
    and ``cuda:N`` are returned as they are when that device is here. Raises a :class:`BlocklensError` naming
    the device asked for, why it is not here, and the devices that are."""
    name = check_device_name(device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    here = available_devices()
    if len(here) == 1:
        raise BlocklensError(f"device {name!r} was asked for, but {_why_no_gpu()}; available: cpu")
    index = _CUDA.fullmatch(name).group(1)
    if index is not None and int(index) >= len(here) - 1:
        raise BlocklensError(f"device {name!r} was asked for, but torch sees {len(here) - 1} GPU(s) here; "
                             f"available: {', '.join(here)}")
    return name


def to_device(model, device: str | torch.device | None = "auto"):
    """``model`` (a :class:`~blocklens.models.Model`, or anything with a ``module``) moved to
    :func:`resolve_device` ``(device)``; returns it."""
    model.module.to(resolve_device(device))
    return model
