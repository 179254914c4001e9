"""Render speed on EfficientNet-Lite0 (CPU), as ratios measured in one run.

(a) one batch of 8 channels vs 8 single-channel renders one after another (same steps);
(b) our time per render step vs the floor: a bare forward + input-gradient backward of the same batch at the
    same (transformed) size, the full network, no hooks;
(c) 8 icons served from the store vs rendered.
Run: python bench/bench_render_speed.py [--steps N] [--repeats R]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import blocklens as bl  # noqa: E402
from _timing import median_times  # noqa: E402
from blocklens.optvis.render import render  # noqa: E402

LAYER = "blocks.9"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = bl.load_model()
    targets = [f"{LAYER}:{c}" for c in range(8)]
    kw = dict(size=128, steps=args.steps, progress=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {LAYER}, 128 px, {args.steps} steps; "
          f"medians of {args.repeats}")

    # (a) batched vs sequential
    t = median_times({
        "batch of 8": lambda: render(model, targets, **kw),
        "8 one by one": lambda: [render(model, [tg], **kw) for tg in targets],
    }, repeats=args.repeats, warmup=1)
    print(f"(a) batch of 8: {t['batch of 8']:.2f} s, 8 one by one: {t['8 one by one']:.2f} s -> "
          f"sequential / batched = {t['8 one by one'] / t['batch of 8']:.2f}x")

    # (b) per step vs the bare forward+backward floor at the mean transformed size (128+24-8 = 144, then
    # scaled by 0.9..1.1 and cropped by 4: about 140 px)
    x = torch.rand(8, 3, 140, 140, requires_grad=True)

    def bare():
        out = model.module(model.normalize(x))
        (g,) = torch.autograd.grad(out[:, :8].sum(), x)
        return g

    # steady state: the dead-ReLU rescue is on for the first 16 of 512 steps only, measured apart below
    t = median_times({"render": lambda: render(model, targets, rescue_steps=0, **kw), "bare": bare,
                      "rescue": lambda: render(model, targets, rescue_steps=args.steps, **kw)},
                     repeats=args.repeats, warmup=1)
    per_step = t["render"] / args.steps
    print(f"(b) render step {per_step * 1e3:.0f} ms vs bare full forward+backward {t['bare'] * 1e3:.0f} ms "
          f"-> {per_step / t['bare']:.2f}x the floor (the forward stops after {LAYER})")
    print(f"    a step with the dead-ReLU rescue on costs {t['rescue'] / t['render']:.2f}x a plain step; "
          f"over 512 steps (16 rescued) that adds {100 * 16 * (t['rescue'] / t['render'] - 1) / 512:.1f}%")
    x_logit = torch.rand(8, 3, 140, 140, requires_grad=True)

    def bare_logit():
        (g,) = torch.autograd.grad(model.module(model.normalize(x_logit))[:, :8].sum(), x_logit)
        return g

    logit_targets = [f"logit:{c}" for c in range(8)]
    t = median_times({"render": lambda: render(model, logit_targets, rescue_steps=0, **kw), "bare": bare_logit},
                     repeats=args.repeats, warmup=1)
    print(f"    logits (full network): render step {t['render'] / args.steps * 1e3:.0f} ms vs bare "
          f"{t['bare'] * 1e3:.0f} ms -> {t['render'] / args.steps / t['bare']:.2f}x the floor")

    # (c) store vs render
    with tempfile.TemporaryDirectory() as d:
        store = bl.IconStore(d)
        t0 = time.perf_counter()
        bl.icons(model, LAYER, range(8), store=store, progress=False, size=128, steps=args.steps)
        rendered = time.perf_counter() - t0
        served = statistics.median(
            [_timed(lambda: bl.icons(model, LAYER, range(8), store=store, size=128, steps=args.steps))
             for _ in range(20)])
    print(f"(c) 8 icons rendered ({args.steps} steps): {rendered:.2f} s, served from the store: "
          f"{served * 1e3:.1f} ms -> {rendered / served:.0f}x faster "
          f"(at the default 512 steps: about {rendered * 512 / args.steps / served:.0f}x)")


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
