"""``Model``: one interface over any image classifier (the embedded zoo or a module the user built).

A Model bundles an ``nn.Module`` (in eval mode) with what turns pictures into its input:

- ``preprocess(image)``: any image (path, bytes, PIL) -> a ``(1, 3, S, S)`` input tensor (resize the shorter
  side, centre crop, normalize);
- ``normalize(x)``: a ``(B, 3, H, W)`` RGB tensor in [0, 1] -> the model's input scale (feature visualization
  optimizes images in [0, 1] and feeds them through this);
- ``labels``: class names, with lookup by name, synonym or index;
- ``layers``: every named call site with its output shape at ``input_size`` (see :mod:`blocklens.probe`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import BlocklensError
from ..images import ImageLike, load_image
from ..probe import LayerInfo, LayerTable, Probe, discover
from .labels import Labels, imagenet_labels, imagenet_synonyms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    prob: float

    def to_json(self) -> dict:
        return {"index": self.index, "label": self.label, "prob": round(self.prob, 6)}


def resize_and_crop(img: Image.Image, size: int, resize: int) -> Image.Image:
    """Resize the shorter side to ``resize`` (bicubic), then take the central ``size x size`` crop."""
    w, h = img.size
    scale = resize / min(w, h)
    nw, nh = max(resize, round(w * scale)), max(resize, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor01(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``(1, 3, H, W)`` float tensor in [0, 1]."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()


class MeanStd(nn.Module):
    """``(x - mean) / std`` per channel, for inputs in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Model:
    """An image classifier with named layers. Build one with :func:`blocklens.load_model` or :func:`wrap`."""

    def __init__(self, module: nn.Module, *, name: str, normalize: Callable[[torch.Tensor], torch.Tensor],
                 labels: Labels | None = None, input_size: int = 224, resize: int | None = None,
                 preprocess: Callable[[Image.Image], torch.Tensor] | None = None):
        self.module = module.eval()
        self.name = name
        self.normalize = normalize
        self.input_size = int(input_size)
        self.resize = int(resize or round(input_size / 0.875))
        self._custom_preprocess = preprocess
        self._labels = labels
        self._layers: LayerTable | None = None
        self._fingerprint: str | None = None
        self.spec: str | None = None  # the spec and weights file it was loaded from (load_model sets them), so
        self.weights: str | None = None  # that worker processes can rebuild it

    def __repr__(self) -> str:
        return f"<blocklens.Model {self.name!r} input {self.input_size}px, {type(self.module).__name__}>"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    # -- input --------------------------------------------------------------------------------------------------
    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """Any image -> ``(1, 3, input_size, input_size)`` model input (shorter side resized, centre crop)."""
        img = load_image(image)
        if self._custom_preprocess is not None:
            x = self._custom_preprocess(img)
            return x if x.dim() == 4 else x.unsqueeze(0)
        return self.normalize(to_tensor01(resize_and_crop(img, self.input_size, self.resize)))

    def crop(self, image: ImageLike) -> Image.Image:
        """The RGB picture the model sees (after resize and crop), for display under overlays."""
        return resize_and_crop(load_image(image), self.input_size, self.resize)

    # -- labels -------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> Labels:
        if self._labels is None:
            with torch.no_grad():
                n = self.module(torch.zeros(1, 3, self.input_size, self.input_size, device=self.device)).shape[-1]
            self._labels = Labels([f"class {i}" for i in range(n)])
        return self._labels

    def class_index(self, cls: int | str) -> int:
        return self.labels.index(cls)

    # -- layers -------------------------------------------------------------------------------------------------
    @property
    def layers(self) -> LayerTable:
        """Every call site with a tensor output, in execution order, with shapes at ``input_size``."""
        if self._layers is None:
            example = torch.zeros(1, 3, self.input_size, self.input_size, device=self.device)
            infos = discover(self.module, example)
            self._layers = LayerTable(infos, (p for p, _ in self.module.named_modules() if p))
        return self._layers

    def layer(self, name: str | LayerInfo) -> LayerInfo:
        return self.layers.resolve(name)

    def probe(self, layers: Iterable[str | LayerInfo], grad: bool = False, edit: dict | None = None) -> Probe:
        """A :class:`~blocklens.probe.Probe` on ``layers`` (names resolved, errors name the valid ones);
        ``edit`` maps some of those layers to functions that replace their output."""
        infos = [self.layer(n) for n in layers]
        edits = {self.layer(k).name: f for k, f in (edit or {}).items()}
        missing = set(edits) - {i.name for i in infos}
        infos += [self.layer(n) for n in missing]
        return Probe(self.module, infos, grad=grad, edit=edits)

    def activations(self, x: torch.Tensor, layers: Iterable[str | LayerInfo] | str,
                    stop: bool = True) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` for input batch ``x`` (no gradients), keyed by the names as given.

        The forward pass stops after the deepest layer asked for unless ``stop=False``.
        """
        if isinstance(layers, (str, LayerInfo)):
            layers = [layers]
        asked = list(layers)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        with torch.no_grad(), self.probe(asked) as probe:
            probe.run(x.to(self.device), stop=stop)
        return {(a.name if isinstance(a, LayerInfo) else a): probe.activations[self.layer(a).name] for a in asked}

    # -- prediction ---------------------------------------------------------------------------------------------
    def predict(self, image: ImageLike | torch.Tensor, top: int = 5) -> list[Prediction]:
        """The ``top`` classes with their softmax probabilities for one image (or a ``(1, 3, H, W)`` input)."""
        x = image if isinstance(image, torch.Tensor) else self.preprocess(image)
        with torch.no_grad():
            logits = self.module(x.to(self.device))
        if logits.dim() != 2 or logits.shape[0] != 1:
            raise BlocklensError(f"predict expects one image, so logits of shape (1, classes); got {tuple(logits.shape)}")
        probs = logits.softmax(-1)[0]
        top = max(1, min(int(top), probs.numel()))
        values, idx = probs.topk(top)
        return [Prediction(int(i), self.labels[int(i)], float(v)) for v, i in zip(values, idx)]

    # -- identity -----------------------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """A short hash of the weights and buffers: equal for equal models, different if any weight differs."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for k, v in sorted(self.module.state_dict().items()):
                h.update(k.encode())
                h.update(str(tuple(v.shape)).encode() + str(v.dtype).encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes() if v.dtype != torch.bfloat16
                         else v.detach().float().cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def wrap(module: nn.Module, *, preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
         labels: Sequence[str] | str | Labels | None = None, input_size: int = 224,
         mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
         normalize: Callable[[torch.Tensor], torch.Tensor] | None = None, resize: int | None = None,
         name: str | None = None) -> Model:
    """Give any ``nn.Module`` image classifier the :class:`Model` interface.

    - ``labels``: a list of class names, ``"imagenet"`` for the ImageNet-1k names, or None (``"class i"``).
    - ``normalize`` maps [0, 1] RGB to the module's input; by default ``(x - mean) / std`` (ImageNet's).
    - ``preprocess`` (PIL image -> input tensor) replaces the default resize/crop/normalize for real images;
      ``normalize`` is still what feature visualization uses.
    """
    if not isinstance(module, nn.Module):
        raise BlocklensError(f"wrap() needs a torch.nn.Module, got {type(module).__name__}")
    if isinstance(labels, str):
        if labels.lower() != "imagenet":
            raise BlocklensError(f"labels={labels!r}: pass a list of names or 'imagenet'")
        labels = Labels(imagenet_labels(), list(imagenet_synonyms()))
    elif labels is not None and not isinstance(labels, Labels):
        labels = Labels(list(labels))
    return Model(module, name=name or type(module).__name__, normalize=normalize or MeanStd(mean, std),
                 labels=labels, input_size=input_size, resize=resize, preprocess=preprocess)
