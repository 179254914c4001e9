"""The render loop: optimize images so that objectives rise.

``render(model, targets)`` follows the reference recipe (Lucid): a Fourier-space, colour-decorrelated image,
the standard transformation-robustness stack, Adam at lr 0.05 for 512 steps at 128 px, and the dead-ReLU rescue
for the first 16 steps and whenever an image gets no gradient (:mod:`~blocklens.optvis.rescue`). Many targets render as one batch (one image each, one backward pass for all). Only the
layers the objectives read are hooked, and the forward pass stops after the deepest of them unless an objective
reads the model's output.

Mixed precision: ``amp="bf16"`` runs the model's forward (and so its backward) under ``torch.autocast`` in
bfloat16, the objective and the image in float32; it is part of the recipe (and so of an icon's key) only when
set. Off by default: see the README's "Mixed precision" for where it is used and why nowhere else.

Repeatability: with the same arguments and seed, the CPU result is the same image. The transforms draw from
one generator seeded with ``seed`` (one draw per step for the whole batch), so with ``same_init=True`` (what the
icon store uses) every image's trajectory depends only on its own objective, not on its batch mates.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import BlocklensError
from ..probe import Probe
from . import objectives as obj
from .param import FourierImage, PhaseImage, PixelImage
from .rescue import capped_output, relu_rescue, rescue_on
from .targets import Target, parse_target
from .transforms import Compose, scaled_transforms, standard_transforms

DEFAULTS = dict(size=128, steps=512, lr=0.05, seed=0, param="fft", decorrelate=True, transforms="standard",
                rescue_steps=16, through_cap=True, decay_power=1.0, contrast=None, coarse=None, amp=None)

#: The mixed-precision modes ``render(amp=...)`` takes: the autocast dtype of each.
AMP_DTYPES = {"bf16": torch.bfloat16}


def autocast(amp: str | None, device: torch.device):
    """The context the model's forward runs in: ``torch.autocast`` in ``amp``'s dtype on ``device``'s type, or
    nothing for ``amp=None``."""
    if amp is None:
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise BlocklensError(f"amp must be None or one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


@dataclass
class RenderResult:
    """Rendered images and how the optimization went.

    ``images``: ``(B, H, W, C)`` float32 in [0, 1] (C = 4 with alpha); ``history``: ``(steps, B)`` objective per
    image per step; ``zero_grad_steps``: ``(B,)`` steps in which an image got no gradient at all (a unit that
    stays at zero gradient for most steps is dead: no image excites it).
    """

    images: np.ndarray
    history: np.ndarray
    names: list[str]
    recipe: dict[str, Any]
    zero_grad_steps: np.ndarray
    targets: list[Target | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def uint8(self, i: int) -> np.ndarray:
        return np.clip(np.round(self.images[i] * 255), 0, 255).astype(np.uint8)

    def to_pil(self, i: int = 0) -> Image.Image:
        return Image.fromarray(self.uint8(i))

    @property
    def final(self) -> np.ndarray:
        """Objective value of each image at the last step."""
        return self.history[-1]

    def dead(self, fraction: float = 0.5) -> np.ndarray:
        """Which images had zero gradient in more than ``fraction`` of the steps."""
        return self.zero_grad_steps > fraction * max(1, self.history.shape[0])

    def save(self, folder: str | Path, names: Sequence[str] | None = None) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = names or [t.slug if t else f"image-{i}" for i, t in enumerate(self.targets or [None] * len(self))]
        paths = []
        for i, name in enumerate(names):
            p = folder / f"{name}.png"
            self.to_pil(i).save(p)
            paths.append(p)
        return paths


def _make_param(param, batch: int, size: int, decorrelate: bool, alpha: bool, seeds: Sequence[int],
                decay_power: float = 1.0) -> nn.Module:
    if isinstance(param, nn.Module):
        return param
    if param == "fft":
        return FourierImage(batch=batch, size=size, alpha=alpha, decorrelate=decorrelate, seeds=seeds,
                            decay_power=decay_power)
    cls = {"fft": FourierImage, "pixel": PixelImage, "phase": PhaseImage}.get(param)
    if cls is None:
        raise BlocklensError(f"unknown parameterization {param!r}; choose 'fft', 'phase', 'pixel' or pass an "
                             "nn.Module")
    if cls is PhaseImage and alpha:
        raise BlocklensError("param='phase' makes opaque images; use param='fft' with alpha=True")
    return cls(batch=batch, size=size, alpha=alpha, decorrelate=decorrelate, seeds=seeds)


def _make_transforms(transforms, size: int = 128) -> nn.Module:
    if transforms == "standard":
        return standard_transforms()
    if transforms == "scaled":
        return scaled_transforms(size)
    if transforms in (None, "none"):
        return Compose([])
    if isinstance(transforms, nn.Module):
        return transforms
    if isinstance(transforms, (list, tuple)):
        return Compose(list(transforms))
    raise BlocklensError(f"unknown transforms {transforms!r}; choose 'standard', 'scaled', None or pass modules")


def fast_layout(x: torch.Tensor) -> torch.Tensor:
    """The input batch in channels-last memory order on a CPU, where PyTorch's convolutions run about 20% faster
    forward and backward that way (bench/bench_render_speed.py); the values are the same."""
    if x.device.type == "cpu" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _check_capped(rescue, capped: dict, acts: dict) -> None:
    """Keep the gradient-through-the-cap only where the layer's output is the capped module's output (a layer
    that adds something after its last rectifier is not clipped there)."""
    for name, m in capped.items():
        out = rescue.last_out.get(id(m))
        a = acts[name]
        if out is None or out.shape != a.shape or out.data_ptr() != a.data_ptr():
            rescue.through_cap.discard(id(m))


def _objective_for(model, targets) -> tuple[obj.Objective, list[str], list[Target | None], int]:
    """(objective, names, targets, batch) from an Objective or a list of targets (one image each)."""
    if isinstance(targets, obj.Objective):
        return targets, [targets.name], [None], 0
    if isinstance(targets, (str, Target)):
        targets = [targets]
    targets = list(targets)
    if not targets:
        raise BlocklensError("render() needs at least one target")
    parsed = [parse_target(model, t) for t in targets]
    total = sum(t.objective(batch=b) for b, t in enumerate(parsed))
    return total, [t.label for t in parsed], parsed, len(parsed)


def _batch_for(model, targets, batch: int | None) -> tuple[obj.Objective, list[str], list[Target | None], int]:
    """(objective, names, targets, batch): :func:`_objective_for` with the batch size checked against the targets."""
    objective, names, parsed, n = _objective_for(model, targets)
    batch = batch or n or 1
    if n and batch != n:
        raise BlocklensError(f"batch={batch} but {n} targets were given (one image per target)")
    return objective, names, parsed, batch


def _coarse_switch(coarse: float | None, param, steps: int) -> int | None:
    """Coarse-to-fine: the step at which the half-size image is upsampled to full size (None: no switch)."""
    if not coarse:
        return None
    if param != "fft":
        raise BlocklensError(f"coarse={coarse} needs param='fft' (the image is upsampled in Fourier space)")
    if not 0 < coarse < 1:
        raise BlocklensError(f"coarse is the share of the steps spent at half the size, in (0, 1); got {coarse}")
    return max(1, min(steps - 1, round(coarse * steps)))


def contrast_ramp(contrast: float, step: int, steps: int) -> float:
    """The contrast ramp's weight at ``step``: 1 at once for ``contrast <= 0``, else rising linearly to 1 over the
    first ``contrast`` share of the steps."""
    return 1.0 if contrast <= 0 else min(1.0, step / (contrast * steps))


def _composite(imgs: torch.Tensor, bg_gen: torch.Generator, batch: int, device) -> torch.Tensor:
    """The RGB the model sees of ``imgs`` ``(B, 3 or 4, H, W)``: with alpha, composited on a random uniform
    background (one draw of ``batch`` colours from ``bg_gen``), so alpha must earn its place."""
    rgb = imgs[:, :3]
    if imgs.shape[1] == 4:
        bg = torch.rand(batch, 3, 1, 1, generator=bg_gen).to(device)
        rgb = rgb * imgs[:, 3:] + bg * (1 - imgs[:, 3:])
    return rgb


@dataclass
class _RenderLoop:
    """The render loop: its settings, and its state (the image, its optimizer, the history, the stuck images)."""

    model: Any
    objective: obj.Objective
    image: nn.Module
    batch: int
    steps: int
    size: int
    lr: float
    seed: int
    tf: nn.Module
    rescue_steps: int
    contrast: float | None
    switch: int | None
    amp: str | None = None
    params: list = field(init=False)
    opt: torch.optim.Optimizer = field(init=False)
    history: np.ndarray = field(init=False)       # (steps, B): the objective per image per step
    zero_steps: np.ndarray = field(init=False)    # (B,): steps in which an image got no gradient
    stuck_at: int | None = field(init=False, default=None)  # the first step in which some image got none
    gen: torch.Generator = field(init=False)      # the transforms' draws, seeded with ``seed``
    bg_gen: torch.Generator = field(init=False)   # the alpha backgrounds' draws, seeded with ``seed + 1``
    infos: dict = field(init=False)               # {layer: LayerInfo} of the layers the objective reads
    needs_output: bool = field(init=False)        # whether it reads the model's output too

    def __post_init__(self):
        self.restart(self.image)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.bg_gen = torch.Generator().manual_seed(self.seed + 1)
        self.infos = {name: self.model.layer(name) for name in sorted(self.objective.layers - {obj.OUTPUT})}
        self.needs_output = self.objective.needs_output
        self.history = np.zeros((self.steps, self.batch), dtype=np.float32)
        self.zero_steps = np.zeros(self.batch, dtype=np.int64)

    def restart(self, image: nn.Module) -> None:
        """Optimize ``image`` from now on, with a fresh Adam over its trainable parameters."""
        self.image = image
        self.params = [p for p in image.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=self.lr)

    def capped(self, through_cap: bool) -> dict:
        """``{layer: capped module}`` for the layers whose output a capped rectifier (ReLU6) makes."""
        if not through_cap:
            return {}
        capped = {name: capped_output(self.model.module, info.module) for name, info in self.infos.items()}
        return {name: m for name, m in capped.items() if m is not None}

    def values(self, probe, imgs: torch.Tensor, rescue, capped: dict, step: int) -> torch.Tensor:
        """The objective ``(B,)`` of ``imgs``, through the transforms (one draw from the generator)."""
        x = self.tf(_composite(imgs, self.bg_gen, self.batch, self.model.device), generator=self.gen)
        with autocast(self.amp, self.model.device):
            out = probe.run(fast_layout(self.model.input_from_rgb(x)), stop=not self.needs_output)
        acts = {name: probe.activations[info.name].float() for name, info in self.infos.items()}  # no-op in fp32
        if step == 0 and capped:
            _check_capped(rescue, capped, acts)
        if self.needs_output:
            acts[obj.OUTPUT] = out.float()
        return self.objective(obj.Context(acts, imgs))

    def set_gradients(self, grads, step: int) -> None:
        """Hand ``grads`` to the parameters (zero where unused) and count the images that got none."""
        for p, g in zip(self.params, grads):
            p.grad = g if g is not None else torch.zeros_like(p)
        if len(self.params) == 1 and self.params[0].shape[0] == self.batch:
            stuck = (self.params[0].grad.flatten(1).abs().amax(1) == 0).cpu().numpy()
            self.zero_steps += stuck
            if stuck.any() and self.stuck_at is None:
                self.stuck_at = step

    def step(self, step: int, probe, rescue, capped: dict) -> None:
        """One optimization step of every image."""
        if step == self.switch:  # coarse-to-fine: continue at full size from the upsampled image
            self.restart(self.image.upsampled(self.size))
        rescue.active = rescue_on(step, self.rescue_steps, self.stuck_at)
        if self.contrast is not None and hasattr(self.image, "standardize"):
            self.image.standardize = contrast_ramp(self.contrast, step, self.steps)
        imgs = self.image()
        values = self.values(probe, imgs, rescue, capped, step)
        grads = torch.autograd.grad(-values.sum(), self.params, allow_unused=True)
        self.set_gradients(grads, step)
        self.opt.step()
        self.history[step] = values.detach().cpu().numpy()

    def run(self, through_cap: bool, bar, show: bool) -> None:
        """Every step, with the dead-ReLU rescue and the probe of the layers the objective reads in place."""
        capped = self.capped(through_cap)
        with relu_rescue(self.model.module, capped.values()) as rescue, \
                Probe(self.model.module, list(self.infos.values()), grad=True) as probe:
            for step in range(self.steps):
                self.step(step, probe, rescue, capped)
                bar.update(1)
                if show and step % 16 == 0:
                    bar.set_postfix(objective=f"{float(self.history[step].mean()):.3g}")

    def final_images(self) -> np.ndarray:
        """The images ``(B, H, W, C)`` float32 as shown (grey for a grey model), without transforms."""
        with torch.no_grad():
            imgs = self.image()
            imgs = torch.cat([self.model.display_rgb(imgs[:, :3]), imgs[:, 3:]], dim=1)
            return imgs.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


def render(model, targets, *, size: int = 128, steps: int = 512, lr: float = 0.05, seed: int = 0,
           batch: int | None = None, param: str | nn.Module = "fft", decorrelate: bool = True,
           alpha: bool = False, transforms: Any = "standard", rescue_steps: int = 16, through_cap: bool = True,
           decay_power: float = 1.0, contrast: float | None = None, coarse: float | None = None,
           same_init: bool = False, amp: str | None = None, progress: bool | None = None,
           desc: str = "render") -> RenderResult:
    """Optimize images for ``targets`` and return them with the objective history.

    ``targets``: a target string (``"blocks.9:12"``, ``"blocks.9:12@7,7"``, ``"logit:tiger cat"``), a
    :class:`Target`, a list of them (one image each, rendered together), or an :class:`Objective` (then
    ``batch`` says how many images; an objective with ``batch=None`` parts applies to all of them).
    ``progress``: a progress bar on stderr (default: when stderr is a terminal). ``coarse``: coarse-to-fine, the
    share of the steps spent at half the size before the image is upsampled (in Fourier space) and optimized on
    at full size (the early steps, which set the layout, cost a quarter as much). ``amp``: ``"bf16"`` runs the
    model in bfloat16 autocast (see the module docstring); None (default) in float32.
    """
    if steps < 1 or size < 8:
        raise BlocklensError(f"steps must be >= 1 and size >= 8 (got steps={steps}, size={size})")
    autocast(amp, torch.device("cpu"))  # an unknown mode fails before any work
    objective, names, parsed, batch = _batch_for(model, targets, batch)
    seeds = [seed] * batch if same_init else [seed + b for b in range(batch)]
    switch = _coarse_switch(coarse, param, steps)
    start_size = max(8, size // 2) if switch else size
    image = _make_param(param, batch, start_size, decorrelate, alpha, seeds, decay_power).to(model.device)
    loop = _RenderLoop(model, objective, image, batch=batch, steps=steps, size=size, lr=lr, seed=seed,
                       tf=_make_transforms(transforms, size), rescue_steps=rescue_steps, contrast=contrast,
                       switch=switch, amp=amp)
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=desc, disable=not show, leave=False, unit="step")
    try:
        loop.run(through_cap, bar, show)
        final = loop.final_images()
    finally:
        bar.close()
    recipe = _render_recipe(size=size, steps=steps, lr=lr, seed=seed, param=param, decorrelate=decorrelate,
                            alpha=alpha, transforms=transforms, rescue_steps=rescue_steps, through_cap=through_cap,
                            decay_power=decay_power, contrast=contrast, coarse=coarse, amp=amp)
    return RenderResult(images=final, history=loop.history, names=names, recipe=recipe,
                        zero_grad_steps=loop.zero_steps, targets=parsed)


def _render_recipe(*, size, steps, lr, seed, param, decorrelate, alpha, transforms, rescue_steps, through_cap,
                   decay_power, contrast, coarse, amp=None) -> dict[str, Any]:
    """The recipe a render reports: its settings, a custom parameterization or transforms as "custom" (``amp``
    only when set)."""
    recipe = dict(size=size, steps=steps, lr=lr, seed=seed, param=param if isinstance(param, str) else "custom",
                  decorrelate=decorrelate, alpha=alpha,
                  transforms=transforms if isinstance(transforms, str) or transforms is None else "custom",
                  rescue_steps=rescue_steps, through_cap=through_cap, decay_power=decay_power, contrast=contrast,
                  coarse=coarse)
    return recipe | ({"amp": amp} if amp else {})
