"""docs/concepts_malamute.png and docs/vocabulary_malamute_vs_german_shepherd.png: the concepts of one real class and
the vocabulary of a pair, over views of the bundled and shared photographs (labels from the model's predictions).

The folder: 12 views (random crops of 60..100% of the shorter side, some mirrored, seeded) of each photograph in
blocklens/data/images and ../shared/images. Run: python docs/concepts.py [--out docs/] (about two minutes on a CPU).
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import blocklens as bl
from blocklens.images import bundled_images

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "images"


def views(folder: Path, per: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    photos = list(bundled_images().values()) + sorted(p for p in SHARED.glob("*") if p.suffix in (".jpg", ".png"))
    for photo in photos:
        img = Image.open(photo).convert("RGB")
        for i in range(per):
            s = int(min(img.size) * rng.uniform(0.6, 1.0))
            x0, y0 = int(rng.integers(0, img.width - s + 1)), int(rng.integers(0, img.height - s + 1))
            v = img.crop((x0, y0, x0 + s, y0 + s)).resize((256, 256), Image.BICUBIC)
            (v.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else v).save(folder / f"{photo.stem}_{i:02d}.jpg")
    return folder


def row(icon, patches, text, px=72):
    out = Image.new("RGB", (px * (len(patches) + 1) + 8 * len(patches) + 16, px + 34), "white")
    if icon is not None:
        out.paste(icon.to_pil().convert("RGB").resize((px, px), Image.BICUBIC), (0, 0))
    for i, p in enumerate(patches):
        out.paste(Image.fromarray(p).resize((px, px), Image.BILINEAR), (px + 16 + i * (px + 8), 0))
    ImageDraw.Draw(out).text((0, px + 6), text, fill=(20, 20, 20))
    return out


def stack(rows, title):
    w = max([r.width for r in rows] + [int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title)) + 8])
    out = Image.new("RGB", (w + 24, sum(r.height + 12 for r in rows) + 40), "white")
    ImageDraw.Draw(out).text((12, 12), title, fill=(0, 0, 0))
    y = 36
    for r in rows:
        out.paste(r, (12, y))
        y += r.height + 12
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    model = bl.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        folder = views(Path(tmp))
        r = bl.class_concepts(model, folder, "malamute", vs="German shepherd", store=args.store, progress=True,
                              log=lambda m: print(m, file=sys.stderr))
        print("\n".join(r.summary()))
        rows = []
        for rank, c in enumerate(r.concepts, 1):
            flags = "; ".join(code for code, _ in c.flags) or "no flag"
            rows.append(row(c.icon, [e.patch for e in c.examples],
                            f"#{rank} concept {c.index}: probability drop {c.importance:.3f} (log-prob {c.logprob_drop:.2f}), "
                            f"flips {c.flipped}/{c.predicted}, coverage {c.coverage:.0%}, on German shepherd "
                            f"{c.other_ratio:.2f}x; {flags}" if c.other_ratio is not None else f"#{rank} concept {c.index}"))
        stack(rows, f"Concepts of malamute at {r.layer} ({len(r.images)} views predicted malamute, k={r.k}): "
                    "icon, then the top patches").save(Path(args.out) / "concepts_malamute.png")
        v = r.vocabulary
        rows = [row(ch["icon"], [e.patch for e in ch["examples"][:6]],
                    f"channel {ch['channel']}: {'for malamute' if ch['side'] == 'for' else 'for German shepherd'}, "
                    f"mean evidence {ch['evidence']:+.2f} (logit difference)") for ch in v["channels"]]
        stack(rows, f"Malamute vs German shepherd across {v['images']} views of both: the channels with the most "
                    "evidence, each with the patches where it carried the most for its side"
              ).save(Path(args.out) / "vocabulary_malamute_vs_german_shepherd.png")
        print("labels from", r.labels_from, "images", len(r.images), "vs images", v["images"])


if __name__ == "__main__":
    main()
