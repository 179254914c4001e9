"""Icon recipes x quality figures x CPU seconds per icon, on EfficientNet-Lite0 (what chose the presets).

32 channels, drawn with numpy seed 0: 4 from each of four block outputs (blocks.3, 7, 11, 15) and four post-ReLU6
layers (blocks.7.expand.act, blocks.11.expand.act, blocks.13.depthwise.act, blocks.15.depthwise.act). Each recipe
renders all 32 (batches of 16, as explain does, ``same_init``), and :func:`blocklens.quality.assess` measures
them: specificity (own unit highest on its own icon among the 32), strength (own value / best photograph),
RMS contrast, colourfulness, spectrum slope and high-frequency energy (photographs' figures at the same size on
the last line). Seconds per icon are wall-clock on this machine, all rows in one run: compare rows, not runs.

Recipes (see blocklens.recipes.PRESETS and blocklens.optvis.render):
- ``old quick``: the quick preset before this bench (56 px, 48 steps, Lucid's 1/f Fourier image, no contrast ramp).
- ``phase``: MACO-style phase-only image with the natural spectrum of the bundled photographs (56 px, 48 steps).
- ``+contrast``: the Fourier image standardized per colour channel to a photograph's contrast, ramped in over the
  first half of the steps.
- ``quick``: +contrast with 1/f^1.5 preconditioning (less high-frequency speckle): the quick preset.
- ``quick, 96 steps`` / ``80 px``: the next points up the frontier.
- with ``--reference``: the default preset (128 px, 512 steps, all 32 units: about 10 minutes on two cores) and
  Lucid's recipe at 128 px / 512 steps (the icons in docs/icons_channels.png) on the first 16.

Writes docs/icons_quick_vs_reference.png (one row per recipe, 8 units) and prints the table.
Run: python bench/bench_icon_quality.py [--reference] [--rows quick,old-quick]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

import blocklens as bl
from blocklens import quality
from blocklens.optvis.render import render
from blocklens.sheet import contact_sheet

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = ["blocks.3", "blocks.7", "blocks.11", "blocks.15"]
RELU6 = ["blocks.7.expand.act", "blocks.11.expand.act", "blocks.13.depthwise.act", "blocks.15.depthwise.act"]

RECIPES = {
    "old-quick": dict(size=56, steps=48),
    "phase": dict(size=56, steps=48, param="phase", lr=0.1),
    "+contrast": dict(size=56, steps=48, contrast=0.5),
    "quick-56": dict(size=56, steps=48, decay_power=1.5, contrast=0.5),  # the quick preset before issue 19
    "quick": dict(size=128, steps=48, decay_power=1.5, contrast=0.5, coarse=0.5),
    "quick-32": dict(size=56, steps=32, decay_power=1.5, contrast=0.5),
    "quick-d1.25": dict(size=56, steps=48, decay_power=1.25, contrast=0.5),
    "quick-scaled": dict(size=56, steps=48, decay_power=1.5, contrast=0.5, transforms="scaled"),
    "quick-scaled-64": dict(size=64, steps=48, decay_power=1.5, contrast=0.5, transforms="scaled"),
    "quick-96": dict(size=56, steps=96, decay_power=1.5, contrast=0.5),
    "quick-80px": dict(size=80, steps=48, decay_power=1.5, contrast=0.5),
}
REFERENCE = {
    "lucid-128": dict(size=128, steps=512),
    "default": dict(size=128, steps=512, decay_power=1.5, contrast=0.5),
}


def units(model) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"{layer}:{int(c)}" for layer in BLOCKS + RELU6
            for c in sorted(rng.choice(model.layer(layer).channels, 4, replace=False))]


def run(model, targets, recipe, batch=16):
    imgs, zero, t0 = [], [], time.perf_counter()
    for i in range(0, len(targets), batch):
        r = render(model, targets[i:i + batch], same_init=True, progress=False, **recipe)
        imgs += [r.uint8(j) for j in range(len(r))]
        zero += (r.zero_grad_steps / recipe["steps"]).tolist()
    return imgs, (time.perf_counter() - t0) / len(targets), np.array(zero)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", action="store_true", help="also the 128 px / 512-step recipes")
    ap.add_argument("--rows", help="comma-separated recipe names to run (default: all quick-sized ones)")
    args = ap.parse_args()
    from blocklens.recipes import PRESETS

    assert RECIPES["quick"] == PRESETS["quick"]["icons"], "the bench's quick row must be the quick preset"
    model = bl.load_model()
    targets = units(model)
    # interleave layers so every batch of 16 holds every layer kind (equal cost per batch)
    order = sorted(range(len(targets)), key=lambda i: (i % 4, i))
    targets = [targets[i] for i in order]
    rows = dict(RECIPES)
    if args.reference:
        rows.update(REFERENCE)
    if args.rows:
        rows = {k: v for k, v in rows.items() if k in args.rows.split(",")}
    sheet, labels = [], []
    head = (f"{'recipe':<12} {'px':>4} {'steps':>5} {'s/icon':>7} {'x quick':>7} {'specific':>9} {'strength':>8} "
            f"{'contrast':>8} {'colourf.':>8} {'slope':>6} {'HF %':>5} {'zero-grad max':>13}")
    print(head)
    results = {}
    for name, recipe in rows.items():
        ts = targets[:16] if name == "lucid-128" else targets
        imgs, per_icon, zero = run(model, ts, recipe)
        q = quality.assess(model, imgs, ts)
        live_zero = zero[q.live]
        stuck = [t for t, z, live in zip(ts, zero, q.live) if live and z > quality.STUCK_FRACTION]
        s = q.summary()
        results[name] = per_icon
        ratio = per_icon / results["quick"] if "quick" in results else float("nan")
        print(f"{name:<12} {recipe['size']:>4} {recipe['steps']:>5} {per_icon:>7.2f} {ratio:>7.1f} "
              f"{s['specific']:>4}/{s['live']:<4} {s['strength']:>8.1f} {s['contrast']:>8.3f} "
              f"{s['colourfulness']:>8.1f} {s['slope']:>6.2f} {100 * s['hf']:>5.1f} "
              f"{100 * (live_zero.max() if len(live_zero) else 0):>12.0f}%", flush=True)
        if stuck:
            print(f"{'':12} more than {100 * quality.STUCK_FRACTION:.0f}% zero-gradient steps: {stuck}")
        if q.dead.any() or (~q.specific).any():
            print(f"{'':12} not specific: {[t for t, ok in zip(ts, q.specific) if not ok]}; "
                  f"dead: {[t for t, d in zip(ts, q.dead) if d]}")
        if name in ("old-quick", "quick", "lucid-128", "default", "phase"):
            sheet += imgs[:8]
            labels += [f"{name} {t}" for t in ts[:8]]
    p = quality.photo_stats(56)
    print(f"{'photographs':<12} {56:>4} {'':>5} {'':>7} {'':>7} {'':>9} {'':>8} {p['contrast']:>8.3f} "
          f"{p['colourfulness']:>8.1f} {p['slope']:>6.2f} {100 * p['hf']:>5.1f}")
    if sheet:
        cell = 112
        from PIL import Image
        sheet = [np.asarray(Image.fromarray(im).resize((cell, cell), Image.BICUBIC)) for im in sheet]
        (ROOT / "docs").mkdir(exist_ok=True)
        contact_sheet(sheet, labels, columns=8, cell=cell).save(ROOT / "docs" / "icons_quick_vs_reference.png")
        print("contact sheet: docs/icons_quick_vs_reference.png")


if __name__ == "__main__":
    sys.exit(main())
