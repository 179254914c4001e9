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
    out = Image.new("RGB", (px * (patches + 1) + 6 * patches + 10, px + 44), "white")
    if atom.icon is not None:
        out.paste(atom.icon.to_pil().convert("RGB").resize((px, px), Image.BICUBIC), (0, 0))
    for i, e in enumerate(atom.examples[:patches]):
        out.paste(Image.fromarray(e.patch).resize((px, px), Image.BILINEAR), (px + 10 + i * (px + 6), 0))
    d = ImageDraw.Draw(out)
    drives = ", ".join(f"{x.label} {x.prob_drop:+.2f}" for x in atom.drives[:2])
    d.text((0, px + 4), f"atom {atom.index} · fires on {atom.coverage:.0%} · {drives}", fill=(20, 20, 20))
    if atom.flags:
        d.text((0, px + 20), "flags: " + ", ".join(c for c, _ in atom.flags), fill=(170, 30, 30))
    return out


def sheet(d, cols: int = 2) -> Image.Image:
    order = sorted(d.atoms, key=lambda a: -(a.drives[0].prob_drop if a.drives else 0))
    cards = [card(a) for a in order]
    w, h = cards[0].width, cards[0].height
    rows = -(-len(cards) // cols)
    q = d.quality
    title = (f"{d.method.upper()} dictionary, {len(d.atoms)} atoms at {d.layer} of {d.model}, {len(d.images)} views of "
             f"the photographs: explained variance {q['explained_variance']:.0%} (PCA {q['pca']['explained_variance']:.0%}), "
             f"{q['active_per_position']:.1f} active atoms per position. Each: icon, top patches, the classes whose "
             "probability drops most when it is removed where it fires")
    out = Image.new("RGB", (cols * (w + 24) + 24, rows * (h + 10) + 48), "white")
    ImageDraw.Draw(out).text((12, 12), title, fill=(0, 0, 0))
    for i, c in enumerate(cards):
        out.paste(c, (12 + (i % cols) * (w + 24), 40 + (i // cols) * (h + 10)))
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
