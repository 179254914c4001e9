"""Does the concept dictionary find a cue nobody asked about, on real photographs and the embedded model's own weights?

42 ImageNet photographs (one per class, drawn with a seed from github:EliSchwartz/imagenet-sample-images), half of
them stamped with a semi-transparent text line "www.stockphoto.com" near the bottom (a watermark, as stock photos
carry), no labels. The default dictionary (32 NMF atoms at blocks.11) is learned over the folder; printed: each atom
whose top 8 patches come mostly from stamped images, where those patches sit, the classes it drives and its flags.

    fetch github:EliSchwartz/imagenet-sample-images, then
    python bench/bench_text_cue.py --repo /work/.mirror/EliSchwartz+imagenet-sample-images/repo [--seed 0]
"""
import argparse
import io
import random
import subprocess
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

import blocklens as bl

TEXT, AT, SIZE = "www.stockphoto.com", (40, 196), 22     # on a 256 px square; the model sees its centre 224 px


def make_folder(repo: str, root: Path, n: int, seed: int, stamp: bool = True) -> Path:
    """``n`` ImageNet photographs as 256 px centre squares, every other one stamped with :data:`TEXT` (``stamp``)."""
    ls = subprocess.run(["git", "-C", repo, "ls-tree", "--name-only", "HEAD"], capture_output=True, text=True,
                        check=True).stdout.split()
    random.seed(seed)
    font = ImageFont.load_default(size=SIZE)
    for i, name in enumerate(random.sample([x for x in ls if x.endswith(".JPEG")], n)):
        data = subprocess.run(["git", "-C", repo, "show", f"HEAD:{name}"], capture_output=True, check=True).stdout
        im = Image.open(io.BytesIO(data)).convert("RGB")
        s = min(im.size)
        x0, y0 = (im.width - s) // 2, (im.height - s) // 2
        im = im.crop((x0, y0, x0 + s, y0 + s)).resize((256, 256), Image.BICUBIC)
        if stamp and i % 2 == 0:
            ImageDraw.Draw(im, "RGBA").text(AT, TEXT, fill=(255, 255, 255, 200), font=font)
        im.save(root / f"{i:02d}_{'text' if i % 2 == 0 else 'plain'}.jpg", quality=92)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repo", required=True, help="a git mirror of EliSchwartz/imagenet-sample-images")
    ap.add_argument("--images", type=int, default=42)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(args.repo, Path(tmp), args.images, args.seed)
        d = bl.concept_dictionary(bl.load_model(), root, store=Path(tmp) / "store", icons=False, progress=False)
        print(d.summary()[0])
        for a in d.atoms:
            stamped = sum("_text" in str(e.path) for e in a.examples[:8])
            if stamped < 6:
                continue
            rows = sum(e.centre[1] >= AT[1] - 16 for e in a.examples[:8])  # centre on the text's row (224 px frame)
            drives = ", ".join(f"{x.label} (logit {-x.logit_drop:+.2f}, p {-x.prob_drop:+.3f}, others "
                               f"{x.other_share:.0%})" for x in a.drives[:3])
            print(f"atom {a.index}: {stamped}/8 top patches from stamped images, {rows}/8 centred on the text's row; "
                  f"removing it: {drives}; flags: {', '.join(c for c, _ in a.flags) or 'none'}")


if __name__ == "__main__":
    main()
