"""Layer-to-layer spatial attribution, for a 14x14 target layer (blocks.9, 196 positions).

Times our two strategies (`batched`: every position as one batch through the layers between; `loop`: one
forward, then one backward per position through the retained graph) against two references: the
straightforward hand-written loop (the same as `loop`, without blocklens) and Lucid's way (a fresh forward
and backward pass of the network per position). Checks every result agrees, prints ratios. Also times channel
attribution (linear, and path at 50 steps). Medians of repeated runs.
Run: python bench/bench_attribution.py [--repeats R]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import blocklens as bl  # noqa: E402
from _timing import median_times  # noqa: E402
from blocklens.analyses.attribution import channel_attribution, spatial_attribution  # noqa: E402
from blocklens.analyses.common import prepare  # noqa: E402


def loop(model, x, source, target):
    leaf = {}
    with model.probe([source, target], grad=True,
                     edit={source: lambda t: leaf.setdefault("a", t.detach().requires_grad_(True))}) as p:
        p.run(x)
    a1, a2 = leaf["a"], p.activations[target]
    h2, w2 = a2.shape[-2:]
    maps = np.zeros((h2, w2, *a1.shape[-2:]))
    for y in range(h2):
        for xx in range(w2):
            (g,) = torch.autograd.grad(a2[0, :, y, xx].norm(), a1, retain_graph=True)
            maps[y, xx] = (a1 * g).sum(1)[0].detach().double().numpy()
    return maps


def lucid_style(model, x, source, target):
    """One full forward + backward per target position, as a graph-mode framework re-runs it per call."""
    h2, w2 = model.layer(target).shape[1:]
    maps = np.zeros((h2, w2, *model.layer(source).shape[1:]))
    for y in range(h2):
        for xx in range(w2):
            leaf = {}
            with model.probe([source, target], grad=True,
                             edit={source: lambda t: leaf.setdefault("a", t.detach().requires_grad_(True))}) as p:
                p.run(x)
            (g,) = torch.autograd.grad(p.activations[target][0, :, y, xx].norm(), leaf["a"])
            maps[y, xx] = (leaf["a"] * g).sum(1)[0].detach().double().numpy()
    return maps


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = bl.load_model()
    x = prepare(model, bl.bundled_image("dog")).x
    for source, target in [("blocks.5", "blocks.9"), ("blocks.3", "blocks.9")]:
        runs = {
            "auto": lambda: spatial_attribution(model, x, source, target).maps,
            "batched": lambda: spatial_attribution(model, x, source, target, strategy="batched").maps,
            "hand loop": lambda: loop(model, x, source, target),
            "lucid-style": lambda: lucid_style(model, x, source, target),
        }
        ref = runs["hand loop"]()
        err = max(float(np.abs(fn() - ref).max()) for k, fn in runs.items() if k != "hand loop")
        t = median_times(runs, repeats=args.repeats, warmup=0)
        print(f"{source} -> {target}, 196 target positions (max difference between methods {err:.1e}):")
        for k in runs:
            print(f"  {k:<12} {t[k]:6.2f} s   lucid-style / this = {t['lucid-style'] / t[k]:5.1f}x   "
                  f"hand loop / this = {t['hand loop'] / t[k]:4.2f}x")
    t = median_times({"linear": lambda: channel_attribution(model, x, "blocks.9", "malamute"),
                      "path50": lambda: channel_attribution(model, x, "blocks.9", "malamute", method="path")},
                     repeats=args.repeats, warmup=1)
    print(f"channel attribution at blocks.9: linear {t['linear'] * 1e3:.0f} ms, path (50 steps) "
          f"{t['path50'] * 1e3:.0f} ms = {t['path50'] / t['linear']:.1f}x linear for 50 path points")


if __name__ == "__main__":
    main()
