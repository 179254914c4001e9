"""Are the icons faithful? Specificity, strength and class icons on EfficientNet-Lite0 (reference recipe).

1. Specificity: 32 channels drawn (seeded) across four depths (blocks 3, 7, 11, 15; 8 each), rendered at 128 px /
   512 steps. Every icon is fed to the model; a channel is specific when its mean activation on its own icon
   is higher than on each of the other 31 icons.
2. Strength: the activation an icon reaches vs the highest activation of that channel over the photographs
   (any position, 224 px input): median ratio.
3. Class icons: logit:CLASS for 10 classes rendered at 224 px; the model's top-1 over 8 random jitters of each
   (pad, crop, scale, rotate) should be that class in at least 80% of views.
Icons go through the icon store (set BLOCKLENS_CACHE to choose where), so a second run only re-measures.
Contact sheets are written to docs/. Run: python bench/bench_specificity.py [--steps N] [--skip-classes]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import blocklens as bl
from blocklens.optvis.transforms import standard_transforms
from blocklens.sheet import contact_sheet

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = ["blocks.3", "blocks.7", "blocks.11", "blocks.15"]
CLASSES = ["goldfish", "golden retriever", "tiger cat", "espresso", "zebra", "school bus", "daisy", "lemon",
           "pizza", "monarch"]


def photos() -> list[Path]:
    shared = ROOT.parent / "shared" / "images"
    found = sorted(p for p in shared.glob("*") if p.suffix.lower() in (".png", ".jpg")) if shared.is_dir() else []
    return found or list(bl.images.bundled_images().values())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--skip-classes", action="store_true")
    args = ap.parse_args()
    model = bl.load_model()
    rng = np.random.default_rng(0)
    units = [(layer, int(c)) for layer in DEPTHS
             for c in sorted(rng.choice(model.layer(layer).channels, 8, replace=False))]

    t0 = time.perf_counter()
    icons = []
    for layer in DEPTHS:
        icons += bl.icons(model, layer, [c for l, c in units if l == layer], steps=args.steps, size=128)
    print(f"32 channel icons ready in {time.perf_counter() - t0:.0f} s (128 px, {args.steps} steps)")

    x = model.normalize(torch.from_numpy(np.stack([i.image for i in icons])).permute(0, 3, 1, 2).float() / 255)
    acts = model.activations(x, DEPTHS)
    # table[i, j]: mean activation of unit j on icon i
    table = np.stack([acts[layer][:, c].mean((1, 2)).numpy() for layer, c in units], axis=1)
    own = np.diag(table)
    specific = [bool(own[j] > np.delete(table[:, j], j).max()) for j in range(len(units))]
    print(f"specificity: {sum(specific)}/{len(units)} = {100 * np.mean(specific):.0f}% of channels win on their own icon")
    for layer in DEPTHS:
        idx = [j for j, (l, _) in enumerate(units) if l == layer]
        print(f"  {layer:<9} {sum(specific[j] for j in idx)}/8 specific; own-icon mean activation median "
              f"{np.median(own[idx]):.1f}")
    misses = [f"{units[j][0]}:{units[j][1]} (best icon: {units[int(table[:, j].argmax())][0]}:"
              f"{units[int(table[:, j].argmax())][1]})" for j in range(len(units)) if not specific[j]]
    if misses:
        print("  not specific:", ", ".join(misses))

    imgs = photos()
    photo_x = torch.cat([model.preprocess(p) for p in imgs])
    pacts = model.activations(photo_x, DEPTHS)
    best_photo = np.array([float(pacts[layer][:, c].max()) for layer, c in units])
    icon_max = np.array([float(acts[layer][j, c].max()) for j, (layer, c) in enumerate(units)])
    print(f"strength over {len(imgs)} photographs: icon mean activation / best photo position: median "
          f"{np.median(own / best_photo):.1f}x; icon peak / photo peak: median {np.median(icon_max / best_photo):.1f}x; "
          f"icons above every photo position: {int((own > best_photo).sum())}/32")
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    contact_sheet([i.image for i in icons], [f"{l}:{c}" for l, c in units], columns=8, cell=128).save(
        docs / "icons_channels.png")

    if args.skip_classes:
        return
    t0 = time.perf_counter()
    cls_icons = bl.icons(model, "logit", CLASSES, steps=args.steps, size=224, batch=5)
    print(f"10 class icons ready in {time.perf_counter() - t0:.0f} s (224 px, {args.steps} steps)")
    gen = torch.Generator().manual_seed(0)
    tf = standard_transforms()
    hits = 0
    for name, icon in zip(CLASSES, cls_icons):
        img = torch.from_numpy(icon.image).permute(2, 0, 1).float().unsqueeze(0) / 255
        views = torch.cat([torch.nn.functional.interpolate(tf(img, generator=gen), size=224, mode="bilinear",
                                                           align_corners=False) for _ in range(8)])
        with torch.no_grad():
            top1 = model.module(model.normalize(views)).argmax(1)
        ok = int((top1 == model.class_index(name)).sum())
        hits += ok
        print(f"  logit:{name:<17} top-1 in {ok}/8 jittered views")
    print(f"class icons: top-1 is the class in {hits}/80 = {100 * hits / 80:.0f}% of views")
    contact_sheet([i.image for i in cls_icons], CLASSES, columns=5, cell=160).save(docs / "icons_classes.png")


if __name__ == "__main__":
    sys.exit(main())
