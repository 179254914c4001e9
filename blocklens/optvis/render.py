"""The render loop: optimize images so that objectives rise.

``render(model, targets)`` follows the reference recipe (Lucid): a Fourier-space, colour-decorrelated image,
the standard transformation-robustness stack, Adam at lr 0.05 for 512 steps at 128 px, and the dead-ReLU rescue
for the first 16 steps and whenever an image gets no gradient (:mod:`~blocklens.optvis.rescue`). Many targets render as one batch (one image each, one backward pass for all). Only the
layers the objectives read are hooked, and the forward pass stops after the deepest of them unless an objective
reads the model's output.

Repeatability: with the same arguments and seed, the CPU result is the same image. The transforms draw from
one generator seeded with ``seed`` (one draw per step for the whole batch), so with ``same_init=True`` (what the
icon store uses) every image's trajectory depends only on its own objective, not on its batch mates.
"""
from __future__ import annotations

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
                rescue_steps=16, through_cap=True, decay_power=1.0, contrast=None, coarse=None)


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


def render(model, targets, *, size: int = 128, steps: int = 512, lr: float = 0.05, seed: int = 0,
           batch: int | None = None, param: str | nn.Module = "fft", decorrelate: bool = True,
           alpha: bool = False, transforms: Any = "standard", rescue_steps: int = 16, through_cap: bool = True,
           decay_power: float = 1.0, contrast: float | None = None, coarse: float | None = None,
           same_init: bool = False, progress: bool | None = None, desc: str = "render") -> RenderResult:
    """Optimize images for ``targets`` and return them with the objective history.

    ``targets``: a target string (``"blocks.9:12"``, ``"blocks.9:12@7,7"``, ``"logit:tiger cat"``), a
    :class:`Target`, a list of them (one image each, rendered together), or an :class:`Objective` (then
    ``batch`` says how many images; an objective with ``batch=None`` parts applies to all of them).
    ``progress``: a progress bar on stderr (default: when stderr is a terminal). ``coarse``: coarse-to-fine, the
    share of the steps spent at half the size before the image is upsampled (in Fourier space) and optimized on
    at full size (the early steps, which set the layout, cost a quarter as much).
    """
    if steps < 1 or size < 8:
        raise BlocklensError(f"steps must be >= 1 and size >= 8 (got steps={steps}, size={size})")
    objective, names, parsed, n = _objective_for(model, targets)
    batch = batch or n or 1
    if n and batch != n:
        raise BlocklensError(f"batch={batch} but {n} targets were given (one image per target)")
    device = model.device
    seeds = [seed] * batch if same_init else [seed + b for b in range(batch)]
    switch = None  # coarse-to-fine: the step at which the half-size image is upsampled to full size
    if coarse:
        if param != "fft":
            raise BlocklensError(f"coarse={coarse} needs param='fft' (the image is upsampled in Fourier space)")
        if not 0 < coarse < 1:
            raise BlocklensError(f"coarse is the share of the steps spent at half the size, in (0, 1); got {coarse}")
        switch = max(1, min(steps - 1, round(coarse * steps)))
    start_size = max(8, size // 2) if switch else size
    image = _make_param(param, batch, start_size, decorrelate, alpha, seeds, decay_power).to(device)
    tf = _make_transforms(transforms, size)
    params = [p for p in image.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    bg_gen = torch.Generator().manual_seed(seed + 1)

    asked = sorted(objective.layers - {obj.OUTPUT})
    infos = {name: model.layer(name) for name in asked}
    needs_output = objective.needs_output
    history = np.zeros((steps, batch), dtype=np.float32)
    zero_steps = np.zeros(batch, dtype=np.int64)
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=desc, disable=not show, leave=False, unit="step")
    try:
        capped = {name: capped_output(model.module, info.module) for name, info in infos.items()} if through_cap else {}
        capped = {name: m for name, m in capped.items() if m is not None}
        with relu_rescue(model.module, capped.values()) as rescue, \
                Probe(model.module, list(infos.values()), grad=True) as probe:
            stuck_at = None  # the first step in which some image got no gradient
            for step in range(steps):
                if step == switch:  # coarse-to-fine: continue at full size from the upsampled image
                    image = image.upsampled(size)
                    params = [p for p in image.parameters() if p.requires_grad]
                    opt = torch.optim.Adam(params, lr=lr)
                rescue.active = rescue_on(step, rescue_steps, stuck_at)
                if contrast is not None and hasattr(image, "standardize"):
                    image.standardize = 1.0 if contrast <= 0 else min(1.0, step / (contrast * steps))
                imgs = image()
                rgb = imgs[:, :3]
                if imgs.shape[1] == 4:  # composite on a random uniform background, so alpha must earn its place
                    bg = torch.rand(batch, 3, 1, 1, generator=bg_gen).to(device)
                    rgb = rgb * imgs[:, 3:] + bg * (1 - imgs[:, 3:])
                x = tf(rgb, generator=gen)
                out = probe.run(fast_layout(model.input_from_rgb(x)), stop=not needs_output)
                acts = {name: probe.activations[info.name] for name, info in infos.items()}
                if step == 0 and capped:
                    _check_capped(rescue, capped, acts)
                if needs_output:
                    acts[obj.OUTPUT] = out
                values = objective(obj.Context(acts, imgs))
                grads = torch.autograd.grad(-values.sum(), params, allow_unused=True)
                for p, g in zip(params, grads):
                    p.grad = g if g is not None else torch.zeros_like(p)
                if len(params) == 1 and params[0].shape[0] == batch:
                    stuck = (params[0].grad.flatten(1).abs().amax(1) == 0).cpu().numpy()
                    zero_steps += stuck
                    if stuck.any() and stuck_at is None:
                        stuck_at = step
                opt.step()
                history[step] = values.detach().cpu().numpy()
                bar.update(1)
                if show and step % 16 == 0:
                    bar.set_postfix(objective=f"{float(history[step].mean()):.3g}")
        with torch.no_grad():
            imgs = image()
            imgs = torch.cat([model.display_rgb(imgs[:, :3]), imgs[:, 3:]], dim=1)  # grey for a grey model
            final = imgs.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
    finally:
        bar.close()
    recipe = dict(size=size, steps=steps, lr=lr, seed=seed, param=param if isinstance(param, str) else "custom",
                  decorrelate=decorrelate, alpha=alpha,
                  transforms=transforms if isinstance(transforms, str) or transforms is None else "custom",
                  rescue_steps=rescue_steps, through_cap=through_cap, decay_power=decay_power, contrast=contrast,
                  coarse=coarse)
    return RenderResult(final, history, names, recipe, zero_steps, parsed)
