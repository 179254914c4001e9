"""Semantic fidelity of icon recipes: does a cheap icon show what the reference icon of its unit shows?

For each layer, 12 channels drawn with numpy seed 0. The reference icons are the "default" preset (128 px,
512 steps; the reference pack holds them for blocks.7 and blocks.11). Each recipe renders the same 12 units, and
EfficientNet-Lite2 (not the model explained) embeds every icon (its last spatial block, averaged over
positions); an icon is retrieved when its nearest reference by cosine is its own unit's
(:func:`blocklens.quality.semantic_fidelity`). The ceiling is the reference recipe with another seed, in the
same run. Seconds per icon are wall-clock on this machine for the icons this run rendered (0 when the store had
them all); compare rows of one run, and read the ratio to the reference.

Layers: two block outputs (blocks.7 at 14x14, blocks.11 at 7x7) and two post-ReLU6 layers at the same depths
(blocks.7.expand.act, blocks.11.expand.act).

Run: python bench/bench_fidelity.py [--store DIR] [--layers ...] [--recipes quick,lucid-quick,...]
The reference icons are rendered into the store when missing (about 15 s each on two cores): give a store that
keeps them (default: the user's store, with the reference pack beneath).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

import blocklens as bl
from blocklens.quality import semantic_fidelity
from blocklens.recipes import PRESETS, icon_cost

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["blocks.7", "blocks.11", "blocks.7.expand.act", "blocks.11.expand.act"]

#: Recipes compared (each: the preset it starts from, and overrides).
RECIPES = {
    "quick": {"preset": "quick"},
    "lucid-quick": {"preset": "lucid", "size": 56, "steps": 48},
    "quick-96": {"preset": "quick", "steps": 96},
    "quick-80px": {"preset": "quick", "size": 80},
    "quick-80px-96": {"preset": "quick", "size": 80, "steps": 96},
    "quick-lr0.1": {"preset": "quick", "lr": 0.1},
    "quick-80px-lr0.1": {"preset": "quick", "size": 80, "lr": 0.1},
    "96px-128": {"preset": "quick", "size": 96, "steps": 128},
    "c2f-80px": {"preset": "quick", "size": 80, "coarse": 0.5},
    "c2f-80px-64": {"preset": "quick", "size": 80, "steps": 64, "coarse": 0.5},
    "c2f-96px": {"preset": "quick", "size": 96, "coarse": 0.5},
    "c2f-96px-0.75": {"preset": "quick", "size": 96, "coarse": 0.75},
    "c2f-96px-64": {"preset": "quick", "size": 96, "steps": 64, "coarse": 0.5},
    "c2f-128px-48": {"preset": "quick", "size": 128, "coarse": 0.5},
    "c2f-128px-64": {"preset": "quick", "size": 128, "steps": 64, "coarse": 0.5},
    "c2f-128px-96": {"preset": "quick", "size": 128, "steps": 96, "coarse": 0.5},
}


def cost(name: str) -> float:
    """A recipe's cost per icon relative to the reference's (steps x pixels)."""
    if name == "ceiling":
        return 1.0
    spec = dict(RECIPES[name])
    full = {**PRESETS[spec.pop("preset", "default")]["icons"], **spec}
    return icon_cost(full) / icon_cost(PRESETS["default"]["icons"])


def units(model, layer, n=12):
    return sorted(int(c) for c in np.random.default_rng(0).choice(model.layer(layer).channels, n, replace=False))


def grid_table(model, store, layer="blocks.7"):
    """Grid fidelity: the quick grid's cells against the default grid's, with the ceiling (seed 1) beside."""
    import time

    from blocklens.analyses.common import prepare
    from blocklens.explain import cached_grid
    from blocklens.quality import JUDGE, grid_fidelity

    judge = bl.load_model(JUDGE)
    prep = prepare(model, bl.bundled_image("dog"))
    grids, secs = {}, {}
    for name, recipe in {"reference": PRESETS["default"]["grid"],
                         "ceiling": {**PRESETS["default"]["grid"], "seed": 1},
                         "quick": PRESETS["quick"]["grid"]}.items():
        t = time.perf_counter()
        grids[name] = cached_grid(model, prep, layer, store, progress=False, **recipe)
        secs[name] = time.perf_counter() - t
    print(f"\n{layer} activation grid of dog.jpg ({grids['quick'].shape[0]}x{grids['quick'].shape[1]} cells), each "
          "cell retrieving among the default preset's cells")
    print(f"{'grid':10s} {'top-1':>6s} {'top-3':>6s} {'near-1':>7s} {'s (0: stored)':>14s}")
    for name in ("ceiling", "quick"):
        f = grid_fidelity(judge, grids[name], grids["reference"])
        print(f"{name:10s} {100 * f['top1']:5.0f}% {100 * f['top3']:5.0f}% {100 * f['near1']:6.0f}% {secs[name]:14.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="icon store (default: the user's store)")
    ap.add_argument("--layers", nargs="+", default=LAYERS)
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names of RECIPES")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--grid", action="store_true", help="also the activation grid of blocks.7 on the dog photo: "
                    "each quick cell against the default preset's cells, the ceiling being the default with seed 1")
    args = ap.parse_args()
    names = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in names if r not in RECIPES]
    if unknown:
        sys.exit(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    model = bl.load_model()
    store = bl.IconStore(args.store)
    rows, results = [], []
    for layer in args.layers:
        res = semantic_fidelity(model, layer, units(model, layer), {n: RECIPES[n] for n in names}, store=store,
                                progress=False)
        results.append(res)
        ref_t = res["reference_seconds_per_icon"]
        ceil = res["ceiling"]
        for name in ["ceiling", *names]:
            r = res[name]
            share = r["top1"] / ceil["top1"] if ceil["top1"] else float("nan")
            rows.append((layer, name, r["top1"], r["top3"], share, r["seconds_per_icon"], r["zero_grad_max"],
                         cost(name)))
        print(f"# {layer}: units {res['units']}; reference {ref_t:.1f} s/icon rendered this run "
              f"(0: from the store)", flush=True)
    ref_cost = max((r[5] for r in rows if r[1] == "ceiling"), default=0.0)
    print(f"\njudge {results[0]['judge']} ({results[0]['judge_layer']}), 12 units a layer, top-1 / top-3 retrieval "
          "among the reference icons of the same units\n")
    print(f"{'layer':24s} {'recipe':18s} {'top-1':>6s} {'top-3':>6s} {'of ceiling':>10s} {'s/icon':>7s} "
          f"{'x faster':>8s} {'cost':>6s} {'zero-grad':>9s}")
    for layer, name, t1, t3, share, sec, zg, c in rows:
        faster = f"{ref_cost / sec:.0f}x" if sec and ref_cost else "-"
        print(f"{layer:24s} {name:18s} {100 * t1:5.0f}% {100 * t3:5.0f}% {100 * share:9.0f}% {sec:7.2f} "
              f"{faster:>8s} {c:6.3f} {100 * zg:8.0f}%")
    print("\ncost: steps x pixels of the recipe against the reference's (blocklens.recipes.icon_cost); s/icon and "
          "'x faster': measured in this run against the reference (ceiling) renders")
    if args.grid:
        grid_table(model, store)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    assert RECIPES["quick"] == {"preset": "quick"} and PRESETS["quick"]


if __name__ == "__main__":
    main()
