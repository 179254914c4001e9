"""``Model``: one interface over any image classifier (the embedded zoo or a module the user built).

A Model bundles an ``nn.Module`` (in eval mode) with what turns pictures into its input:

- ``preprocess(image)``: any image (path, bytes, PIL) -> a ``(1, 3, S, S)`` input tensor (resize the shorter
  side, centre crop, normalize);
- ``normalize(x)``: a ``(B, 3, H, W)`` RGB tensor in [0, 1] -> the model's input scale (feature visualization
  optimizes images in [0, 1] and feeds them through this);
- ``labels``: class names, with lookup by name, synonym or index;
- ``layers``: every named call site with its layout and output shape at ``input_size`` (see
  :mod:`blocklens.probe`);
- ``input_from_rgb(x)``: what feature visualization feeds the module: RGB images in [0, 1] of any size, adapted
  to the module's input channels (``input_channels``: 1 takes the luma, 4 adds an opaque fourth channel),
  resized to ``input_size`` when the module accepts no other size (``fixed_size``, a ViT), then normalized.
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
from ..probe import LayerInfo, LayerTable, Probe, discover_layers
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


_PIL_MODE = {1: "L", 3: "RGB", 4: "RGBA"}
#: ITU-R BT.601 luma weights: how an RGB picture becomes the input of a one-channel model
LUMA = (0.299, 0.587, 0.114)


def to_tensor01(img: Image.Image, channels: int = 3) -> torch.Tensor:
    """PIL image -> ``(1, channels, H, W)`` float tensor in [0, 1] (1: luma, 3: RGB, 4: RGBA)."""
    a = np.asarray(img.convert(_PIL_MODE[channels]), dtype=np.float32) / 255.0
    if a.ndim == 2:
        a = a[..., None]
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()


def adapt_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, channels, H, W)``: luma for 1, RGB plus an opaque channel for 4."""
    if channels == 3:
        return x
    if channels == 1:
        return (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


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
                 preprocess: Callable[[Image.Image], torch.Tensor] | None = None, input_channels: int = 3):
        if input_channels not in _PIL_MODE:
            raise BlocklensError(f"input_channels={input_channels!r}: blocklens feeds models 1 (grayscale), 3 (RGB) "
                                 "or 4 (RGB plus an opaque fourth channel) input channels")
        self.module = module.eval()
        self.name = name
        self.normalize = normalize
        self.input_channels = int(input_channels)
        self.input_size = int(input_size)
        self.resize = int(resize or round(input_size / 0.875))
        self._custom_preprocess = preprocess
        self._labels = labels
        self._layers: LayerTable | None = None
        self._fingerprint: str | None = None
        self._receptive: dict[str, dict] = {}
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
        return self.normalize(to_tensor01(resize_and_crop(img, self.input_size, self.resize), self.input_channels))

    def input_from_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB images in [0, 1] -> the module's input: channels adapted (``input_channels``),
        resized to ``input_size`` (bilinear) if the module takes no other size, normalized."""
        x = adapt_channels(x, self.input_channels)
        if self.fixed_size and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = torch.nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                                align_corners=False, antialias=x.shape[-1] > self.input_size)
        return self.normalize(x)

    def display_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """RGB images in [0, 1] as the module sees their colours (grey for a one-channel model)."""
        if self.input_channels == 1:
            return adapt_channels(x, 1).expand(-1, 3, -1, -1)
        return x

    def _example(self, height: int | None = None, width: int | None = None) -> torch.Tensor:
        return torch.zeros(1, self.input_channels, height or self.input_size, width or self.input_size,
                           device=self.device)

    def prepare(self, image: ImageLike) -> tuple[torch.Tensor, Image.Image]:
        """``(x, crop)`` from one decode of ``image``: the model input ``(1, C, S, S)`` (on the CPU, as
        :meth:`preprocess` gives it) and the RGB picture it shows (the resized centre crop). Raises
        :class:`~blocklens.errors.ImageError` for an unreadable file."""
        img = load_image(image)
        crop = resize_and_crop(img, self.input_size, self.resize)
        if self._custom_preprocess is not None:
            x = self._custom_preprocess(img)
            return (x if x.dim() == 4 else x.unsqueeze(0)), crop
        return self.normalize(to_tensor01(crop, self.input_channels)), crop

    def crop(self, image: ImageLike) -> Image.Image:
        """The RGB picture the model sees (after resize and crop), for display under overlays."""
        return resize_and_crop(load_image(image), self.input_size, self.resize)

    # -- labels -------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> Labels:
        if self._labels is None:
            with torch.no_grad():
                n = self.module(self._example()).shape[-1]
            self._labels = Labels([f"class {i}" for i in range(n)])
        return self._labels

    def class_index(self, cls: int | str) -> int:
        return self.labels.index(cls)

    # -- layers -------------------------------------------------------------------------------------------------
    @property
    def layers(self) -> LayerTable:
        """Every call site with a tensor output, in execution order, with its layout and (canonical) shape at
        ``input_size``. Discovery runs the module at ``input_size`` and once more at a larger, non-square size
        (which tells positions from channels; a module that refuses it has a fixed input size)."""
        if self._layers is None:
            s = self.input_size
            second = self._example(s + max(8, s // 7), s + max(16, (2 * s) // 7))
            infos, fixed = discover_layers(self.module, self._example(), second)
            self._layers = LayerTable(infos, (p for p, _ in self.module.named_modules() if p), fixed_size=fixed)
        return self._layers

    @property
    def fixed_size(self) -> bool:
        """True when the module accepts only ``input_size`` (a ViT): renders are resized to it."""
        return self.layers.fixed_size

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

    @property
    def preprocessing(self) -> dict:
        """What turns a picture into this model's input, as data (what index keys are made of): ``kind``
        ``"resize_and_crop"`` with ``size``, ``resize``, ``channels``, or ``"custom"`` with the function's name."""
        fn = self._custom_preprocess
        if fn is not None:
            return {"kind": "custom", "fn": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
                    "size": self.input_size}
        return {"kind": "resize_and_crop", "size": self.input_size, "resize": self.resize,
                "channels": self.input_channels}

    def receptive_field(self, layer: str | LayerInfo, known: dict | None = None) -> dict:
        """The input footprint of one position of ``layer`` (see :func:`~blocklens.models.receptive.receptive_field`:
        ``size``, ``extent``, ``stride``, ``grid``), measured once per layer and kept; ``known``: a measurement
        made before (an index's manifest keeps one per layer), kept instead of measuring."""
        from .receptive import receptive_field

        name = self.layer(layer).name
        if known is not None:
            self._receptive.setdefault(name, dict(known))
        if name not in self._receptive:
            self._receptive[name] = receptive_field(self, name)
        return dict(self._receptive[name])

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
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         normalize: Callable[[torch.Tensor], torch.Tensor] | None = None, resize: int | None = None,
         name: str | None = None, input_channels: int = 3) -> Model:
    """Give any ``nn.Module`` image classifier the :class:`Model` interface.

    - ``labels``: a list of class names, ``"imagenet"`` for the ImageNet-1k names, or None (``"class i"``).
    - ``normalize`` maps [0, 1] images to the module's input; by default ``(x - mean) / std``, ImageNet's mean
      and std for RGB (their averages, 0.449 / 0.226, for one channel; a four-channel model needs its own).
    - ``input_channels``: 3 (RGB), 1 (grayscale: photos and renders become their luma) or 4 (RGB plus an
      opaque fourth channel, 1.0).
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
    if normalize is None:
        defaults = {3: (IMAGENET_MEAN, IMAGENET_STD), 1: ((0.449,), (0.226,))}.get(input_channels)
        if (mean is None or std is None) and defaults is None:
            raise BlocklensError(f"input_channels={input_channels}: pass mean= and std= with {input_channels} "
                                 "values each (or normalize=)")
        mean = mean if mean is not None else defaults[0]
        std = std if std is not None else defaults[1]
        if len(mean) != input_channels or len(std) != input_channels:
            raise BlocklensError(f"mean has {len(mean)} and std {len(std)} values, but input_channels="
                                 f"{input_channels}; give one value per input channel")
        normalize = MeanStd(mean, std)
    return Model(module, name=name or type(module).__name__, normalize=normalize, labels=labels,
                 input_size=input_size, resize=resize, preprocess=preprocess, input_channels=input_channels)
