"""docs/dictionary_photos.png: the concept dictionary of the bundled and shared photographs at the default layer
(blocks.11 of EfficientNet-Lite0, 32 NMF atoms), each atom as its icon, its top patches and the classes it drives.

The folder: 12 views of each photograph (as docs/concepts.py). Run: python docs/dictionary.py [--out docs/]
(a few minutes on a CPU, most of it the 32 icons).
"""
import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

import blocklens as bl

from concepts import views

HERE = Path(__file__).resolve().parent


def card(atom, px: int = 64, patches: int = 4) -> Image.Image:
    """One atom: icon, top patches, its first three drives and its flags' codes, in a 2-line caption."""
    out = Image.new("RGB", (px * (patches + 1) + 6 * patches + 10, px + 50), "white")
    if atom.icon is not None:
        out.paste(atom.icon.to_pil().convert("RGB").resize((px, px), Image.BICUBIC), (0, 0))
    for i, e in enumerate(atom.examples[:patches]):
        out.paste(Image.fromarray(e.patch).resize((px, px), Image.BILINEAR), (px + 10 + i * (px + 6), 0))
    d = ImageDraw.Draw(out)
    d.text((0, px + 4), f"atom {atom.index} · fires on {atom.coverage:.0%} of images", fill=(20, 20, 20))
    if atom.flags:
        d.text((200, px + 4), "flags: " + ", ".join(c for c, _ in atom.flags), fill=(170, 30, 30))
    for i, x in enumerate(atom.drives[:2]):
        d.text((0, px + 18 + 14 * i), f"{x.label[:28]}: logit {-x.logit_drop:+.1f}, "
               + (f"p {-x.prob_drop:+.2f}" if abs(x.prob_drop) >= 0.005 else "p within 0.005"),
               fill=(20, 20, 20))
    return out


def sheet(d, cols: int = 2) -> Image.Image:
    order = sorted(d.atoms, key=lambda a: -(a.drives[0].logit_drop if a.drives else 0))
    cards = [card(a) for a in order]
    w, h = cards[0].width, cards[0].height
    rows = -(-len(cards) // cols)
    q = d.quality
    title = (f"{d.method.upper()} dictionary, {len(d.atoms)} atoms at {d.layer} of {d.model}, {len(d.images)} views of "
             f"the photographs: explained variance {q['explained_variance']:.0%} (PCA {q['pca']['explained_variance']:.0%}), "
             f"{q['active_per_position']:.1f} active atoms per position.")
    sub = ("Each atom: icon, top patches, the two classes whose logit drops most when its share is removed where it "
           "fires (mean change of logit and probability)")
    out = Image.new("RGB", (cols * (w + 24) + 24, rows * (h + 10) + 58), "white")
    ImageDraw.Draw(out).text((12, 10), title, fill=(0, 0, 0))
    ImageDraw.Draw(out).text((12, 26), sub, fill=(60, 60, 60))
    for i, c in enumerate(cards):
        out.paste(c, (12 + (i % cols) * (w + 24), 50 + (i // cols) * (h + 10)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = views(Path(tmp))
        d = bl.concept_dictionary(bl.load_model(), folder, store=args.store, progress=True, log=print)
        print("\n".join(d.summary()))
        sheet(d).save(Path(args.out) / "dictionary_photos.png")


if __name__ == "__main__":
    main()
