"""Our icon recipes next to two peers, on the same model, channels and CPU: time per icon and quality figures.

Rows (one process, one run each, cheap rows first so machine noise hits every method alike):

- **ours quick / ours default**: ``blocklens.optvis.render.render`` with the render options of
  ``blocklens.recipes.PRESETS[name]["icons"]`` (read at run time, so the rows follow the package), all channels in
  one batch, ``same_init=True``. The default preset is expensive on a CPU; ``--default-steps`` caps its steps.
- **Lucent** (torch-lucent 0.1.8) ``render_vis`` with its default transforms and optimizer (Adam, lr 0.05) and
  its FFT + decorrelated parameterization, all channels in one batch (``param.image(size, batch=n)`` with the
  objective ``sum(objectives.channel("blocks_10", c, batch=i))``: Adam is elementwise, so this is the same
  optimization as one render per channel, with the random transforms shared). Rows: 128 px (as in Lucent's
  README) for each of ``--lucent-steps``, and one at our quick preset's size and steps (an equal-budget row).
  Lucent upsamples any image under 224 px to 224 before the model and runs the whole network every step.
- **MACO** as dreamlens 0.1.1 implements it (``dreamlens.optimization.maco``: fixed ImageNet Fourier magnitude
  from dreamlens's own spectrum file, phase optimized with NAdam lr 1.0, ``nb_crops`` random crops per step
  resized to 224 px, box size schedule linspace(0.5, 0.05), noise schedule logspace(0, -4)), one render per
  channel (MACO optimizes one objective at a time), at its default 512 px image, with ``values_range=(0, 1)``
  (the range of its ``MacoConfig``) and our model's normalization as ``preprocess``. Its reference 256 steps x
  32 crops at 224 px costs minutes per icon on a CPU, so the steps are capped (``--maco-steps``); the crop count
  is its default unless ``--maco-crops`` says otherwise.

How it is measured: ``time.perf_counter()`` around only the optimization of each row, divided by the number of
icons; the ratio is against the "ours quick" row. Peers run with the model's weights frozen (``requires_grad``
off; dreamlens does this itself, Lucent does not) so no row pays for weight gradients it never uses; our
renderer only asks autograd for the image gradient. Quality figures come from ``blocklens.quality.assess`` on
every row's icons resized to one common size (``--common-size``, PIL bicubic): specificity (share of icons
whose own channel is highest on them), strength (own value / best photograph value), RMS contrast,
colourfulness, power-spectrum slope and high-frequency energy, with the bundled photographs' medians at that
size on the last line; a second table gives the figures at each row's own size where that differs.

Compatibility shims (inside this file only): Lucent's ``lucent.misc.io.showing`` imports ``IPython.display``,
which this venv lacks; as nothing here shows images (``show_image=False``), an empty ``IPython.display``
module is put in ``sys.modules`` when the real one does not import. kornia 0.4.1 (Lucent's rotate / translate)
imports and runs on torch 2.14 as is. Lucent names layers by joining module paths with "_": the model is
wrapped in a module that normalizes [0, 1] RGB and registers the network's own children, so the names are the
network's (``blocks_10``) and Lucent runs with ``preprocess=False``.

Install the peers: pip install --no-deps torch-lucent==0.1.8 dreamlens==0.1.1 kornia==0.4.1 decorator
Run: python bench/bench_peers.py [--quick-check] [--default-steps N] [--lucent-steps 128 512]
     [--maco-steps 64 128] [--maco-crops K] [--layer blocks.10] [--out docs/icons_peers.png]
``--quick-check``: 2 channels, a few steps per row, under a minute: a smoke test, not a measurement.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import blocklens as bl
from blocklens import quality
from blocklens.recipes import PRESETS
from blocklens.optvis.render import render
from blocklens.sheet import contact_sheet

ROOT = Path(__file__).resolve().parents[1]


# --- peers: imports and adapters ----------------------------------------------------------------------------


def _import_lucent():
    """Lucent's render / param / objectives modules, with an empty IPython.display if IPython is missing."""
    try:
        import IPython.display  # noqa: F401
    except ImportError:  # only lucent.misc.io.showing.show uses it, and nothing here shows images
        ipython, display = types.ModuleType("IPython"), types.ModuleType("IPython.display")
        ipython.display = display
        sys.modules.setdefault("IPython", ipython)
        sys.modules.setdefault("IPython.display", display)
    from lucent.optvis import objectives, param, render as lucent_render

    return lucent_render, param, objectives


class LucentNet(nn.Module):
    """The network behind a [0, 1] RGB normalization, for Lucent (``preprocess=False``).

    The network's children are registered on this module itself, so Lucent's hook names (module paths joined
    with "_") are the network's own: ``blocks_10``, ``blocks_7_expand_act``. The network is kept outside the
    module tree (no second set of names) and called whole, so its own forward runs unchanged.
    """

    def __init__(self, net: nn.Module, normalize):
        super().__init__()
        object.__setattr__(self, "_net", net)
        object.__setattr__(self, "_normalize", normalize)
        for name, child in net.named_children():
            self.add_module(name, child)

    def forward(self, x):
        return self._net(self._normalize(x))


class frozen:
    """Weights of ``module`` without gradients for the duration (restored after)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.module.parameters()]
        for p in self.module.parameters():
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p, f in zip(self.module.parameters(), self.flags):
            p.requires_grad_(f)


def _to_uint8(x) -> np.ndarray:
    """(H, W, 3) float in [0, 1] (numpy or CHW tensor) -> uint8."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().permute(1, 2, 0).numpy()
    return np.clip(np.round(np.asarray(x)[..., :3] * 255), 0, 255).astype(np.uint8)


# --- one row per method: (icons, seconds of optimization) ----------------------------------------------------


def render_options(recipe: dict) -> dict:
    """The keys of a preset's icon recipe that ``render`` takes (the rest are named in the header line)."""
    return {k: v for k, v in recipe.items() if k in inspect.signature(render).parameters}


def run_ours(model, layer, chans, recipe):
    kw = render_options(recipe)
    targets = [f"{layer}:{c}" for c in chans]
    t = time.perf_counter()
    result = render(model, targets, same_init=True, progress=False, **kw)
    sec = time.perf_counter() - t
    return [result.uint8(i) for i in range(len(chans))], sec


def run_lucent(model, layer, chans, size, steps, seed=0):
    lucent_render, param, objectives = _import_lucent()
    net = LucentNet(model.module, model.normalize).eval()
    name = layer.replace(".", "_")
    # image i of the batch maximizes channel chans[i] (Lucent objectives add with +)
    objective = objectives.channel(name, int(chans[0]), batch=0)
    for i, c in enumerate(chans[1:], start=1):
        objective = objective + objectives.channel(name, int(c), batch=i)
    torch.manual_seed(seed)  # Lucent's FFT init (torch) and its transforms' draws (numpy)
    np.random.seed(seed)
    with frozen(model.module):
        t = time.perf_counter()
        images = lucent_render.render_vis(net, objective, param_f=lambda: param.image(size, batch=len(chans)),
                                          thresholds=(steps,), show_image=False, progress=False,
                                          preprocess=False)
        sec = time.perf_counter() - t
    return [_to_uint8(im) for im in images[-1]], sec


def run_maco(model, layer, chans, steps, crops, size=512, seed=0):
    from dreamlens.objectives import Objective
    from dreamlens.optimization import maco

    out, sec = [], 0.0
    for c in chans:
        torch.manual_seed(seed + int(c))  # crops and noise (torch)
        np.random.seed(seed + int(c))     # initial phase (numpy)
        objective = Objective.channel(model.module, layer, int(c))
        t = time.perf_counter()
        image, _importance = maco(objective, nb_steps=steps, nb_crops=crops, values_range=(0.0, 1.0),
                                  custom_shape=(size, size), input_shape=(3, model.input_size, model.input_size),
                                  preprocess=model.normalize)
        sec += time.perf_counter() - t
        out.append(_to_uint8(image))
    return out, sec


# --- figures and printing -------------------------------------------------------------------------------------


def resized(images, size):
    return [im if im.shape[0] == size else np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC))
            for im in images]


def figures(model, images, targets):
    return quality.assess(model, images, targets).summary()


def fmt(v, spec):
    return format(float("nan") if v is None else v, spec)


def print_table(rows, key, title):
    print(f"\n{title}")
    head = (f"{'method':<22}{'size':>5}{'steps':>6}{'s/icon':>8}{'x quick':>8}{'spec':>6}{'strength':>9}"
            f"{'contr':>7}{'colour':>7}{'slope':>7}{'HF %':>6}")
    print(head)
    print("-" * len(head))
    base = next((r["sec"] for r in rows if r["name"] == "ours quick"), None)
    photos = None
    for r in rows:
        s = r[key]
        photos = s["photos"]
        ratio = r["sec"] / base if base else float("nan")
        print(f"{r['name']:<22}{r['size']:>5}{r['steps']:>6}{r['sec']:>8.2f}{ratio:>8.2f}"
              f"{fmt(s['specificity'], '6.2f')}{fmt(s['strength'], '9.2f')}{fmt(s['contrast'], '7.3f')}"
              f"{fmt(s['colourfulness'], '7.1f')}{fmt(s['slope'], '7.2f')}{fmt(100 * s['hf'] if s['hf'] is not None else None, '6.1f')}"
              + (f"  ({s['dead']} dead)" if s["dead"] else ""))
    if photos:
        print(f"{'photos (median)':<22}{'':>5}{'':>6}{'':>8}{'':>8}{'':>6}{'1 = best':>9}"
              f"{photos['contrast']:>7.3f}{photos['colourfulness']:>7.1f}{photos['slope']:>7.2f}"
              f"{100 * photos['hf']:>6.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", default="blocks.10")
    ap.add_argument("--channels", type=int, default=8, help="how many channels (drawn with numpy seed 0)")
    ap.add_argument("--default-steps", type=int, default=None, help="cap the default preset's steps")
    ap.add_argument("--lucent-size", type=int, default=128)
    ap.add_argument("--lucent-steps", type=int, nargs="+", default=[128])
    ap.add_argument("--no-lucent-equal", action="store_true", help="skip Lucent at the quick preset's budget")
    ap.add_argument("--maco-steps", type=int, nargs="+", default=[64])
    ap.add_argument("--maco-crops", type=int, default=None, help="crops per step (default: dreamlens's)")
    ap.add_argument("--maco-size", type=int, default=None, help="image size (default: dreamlens's)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["ours", "lucent", "maco"])
    ap.add_argument("--common-size", type=int, default=128)
    ap.add_argument("--out", default=str(ROOT / "docs" / "icons_peers.png"))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: steady when other processes share the CPU; 0: torch's choice)")
    ap.add_argument("--quick-check", action="store_true", help="2 channels, a few steps: smoke test")
    args = ap.parse_args()

    from dreamlens.optimization import maco

    maco_defaults = {k: p.default for k, p in inspect.signature(maco).parameters.items()}
    crops = args.maco_crops if args.maco_crops is not None else maco_defaults["nb_crops"]
    maco_size = args.maco_size or maco_defaults["custom_shape"][0]
    quick = dict(PRESETS["quick"]["icons"])
    default = dict(PRESETS["default"]["icons"])
    if args.default_steps:
        default["steps"] = min(default["steps"], args.default_steps)
    n = args.channels
    lucent_steps, maco_steps = args.lucent_steps, args.maco_steps
    if args.quick_check:
        n, quick["steps"], default["steps"] = 2, 3, 3
        lucent_steps, maco_steps, crops = [3], [2], min(crops, 4)

    if args.threads:
        torch.set_num_threads(args.threads)
    dropped = sorted((set(quick) | set(default)) - set(render_options({**quick, **default})))
    if dropped:
        print(f"preset keys that render() does not take, not used: {dropped}")
    model = bl.load_model()
    rng = np.random.default_rng(0)
    chans = [int(c) for c in sorted(rng.choice(model.layer(args.layer).channels, n, replace=False))]
    targets = [f"{args.layer}:{c}" for c in chans]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {model.name}, {args.layer} "
          f"channels {chans}")
    print(f"ours quick {quick}; ours default {default}; Lucent {args.lucent_size} px x {lucent_steps} steps"
          f"{'' if args.no_lucent_equal else ', and at the quick budget'}; MACO {maco_size} px, {crops} crops "
          f"x {maco_steps} steps (dreamlens defaults: {maco_defaults['nb_steps']} steps, "
          f"{maco_defaults['nb_crops']} crops, {maco_defaults['custom_shape']})")

    # cheap rows first, then the expensive ones: (name, sheet tag, size, steps, fn(steps, chans) -> (icons, s))
    plan = []
    if "ours" not in args.skip:
        plan.append(("ours quick", "q", quick["size"], quick["steps"],
                     lambda s, ch: run_ours(model, args.layer, ch, dict(quick, steps=s))))
    if "lucent" not in args.skip and not args.no_lucent_equal:
        plan.append(("lucent (quick budget)", "Lq", quick["size"], quick["steps"],
                     lambda s, ch: run_lucent(model, args.layer, ch, quick["size"], s)))
    lucent_rows = [("lucent", f"L{steps}", args.lucent_size, steps,
                    lambda s, ch: run_lucent(model, args.layer, ch, args.lucent_size, s))
                   for steps in sorted(lucent_steps)] if "lucent" not in args.skip else []
    plan += lucent_rows[:1]
    if "ours" not in args.skip:
        plan.append(("ours default", "d", default["size"], default["steps"],
                     lambda s, ch: run_ours(model, args.layer, ch, dict(default, steps=s))))
    if "maco" not in args.skip:
        plan += [(f"maco {crops} crops", f"M{steps}", maco_size, steps,
                  lambda s, ch: run_maco(model, args.layer, ch, s, crops, maco_size)) for steps in sorted(maco_steps)]
    plan += lucent_rows[1:]

    # warm-up, untimed: first calls pay for lazy set-up (layer discovery, oneDNN kernels for each shape)
    t = time.perf_counter()
    for name, _, _, _, fn in plan:
        fn(1, chans[:1] if name.startswith("maco") else chans)
    print(f"warm-up {time.perf_counter() - t:.1f} s; load average {os.getloadavg()[0]:.1f} "
          "(the CPU may be shared with other processes)", flush=True)

    rows = []
    for name, tag, size, steps, fn in plan:
        load0 = os.getloadavg()[0]
        icons, sec = fn(steps, chans)
        row = dict(name=name, tag=tag, size=size, steps=steps, sec=sec / len(chans), icons=icons)
        row["common"] = figures(model, resized(icons, args.common_size), targets)
        row["own"] = figures(model, icons, targets) if size != args.common_size else row["common"]
        rows.append(row)
        c = row["common"]
        print(f"  {name} {size} px {steps} steps: {sec:.1f} s ({sec / len(chans):.2f} s per icon); load average "
              f"{load0:.1f} -> {os.getloadavg()[0]:.1f}; at {args.common_size} px: specific {c['specific']}/"
              f"{c['live']}, strength {fmt(c['strength'], '.2f')}", flush=True)

    print_table(rows, "common", f"All icons resized to {args.common_size} px (PIL bicubic) before assess; "
                                f"strength = own value / best photo value; photos at {args.common_size} px")
    if any(r["size"] != args.common_size for r in rows):
        print_table([r for r in rows if r["size"] != args.common_size], "own", "At each row's own size")

    # the contact sheet: one row of icons per method, in table order
    images, labels = [], []
    for r in rows:
        for c, im in zip(chans, r["icons"]):
            images.append(im)
            labels.append(f"{r['tag']} {c}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(images, labels, columns=len(chans), cell=96).save(out)
    print(f"\ncontact sheet: {out} (rows: {', '.join(r['tag'] + ' = ' + r['name'] + ' ' + str(r['steps']) for r in rows)})")


if __name__ == "__main__":
    main()
