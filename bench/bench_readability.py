"""How readable are a concept dictionary's atoms, beside the layer's channels on the same folder: the machine score of
blocklens.dataset.readability (two-alternative trials in the spirit of Zimmermann et al., NeurIPS 2024).

The folder: augmented views of the bundled and shared photographs (bench/bench_dictionary.py's make_folder). The
dictionary: 32 NMF atoms at blocks.11 of EfficientNet-Lite0. Each unit (atom or channel) gets its 10 top patches (one
per image, where its peak is highest), 10 bottom patches (where it is lowest) and 10 random ones; each trial holds
out one top patch and one bottom (or random) patch, and the judge picks the one whose features are nearer, by mean
cosine, to the unit's 9 other top patches. Judges: Lite0's penultimate pooled features (the only weights here; not
independent of the analysed layer) and, as a control with no learned features, 8x8 colour thumbnails. Besides the
scores: how many distinct source photographs a unit's top patches come from (the folder holds views of few photos,
and a judge recognises a photograph it has seen in the references).

    python bench/bench_readability.py                 300 images, single-threaded (about 15 min on a busy 2-core box)
    python bench/bench_readability.py --images 120    quicker
    python bench/bench_readability.py --imagenet REPO  distinct ImageNet photographs instead (one per class, from a
                                                      git mirror of EliSchwartz/imagenet-sample-images)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def thumbnails(pictures) -> torch.Tensor:
    """The control judge: each patch as its 8x8 colour thumbnail (192 numbers), mean-removed."""
    from PIL import Image

    x = torch.stack([torch.from_numpy(np.asarray(p.convert("RGB").resize((8, 8), Image.BOX), np.float32).ravel())
                     for p in pictures])
    return x - x.mean(1, keepdim=True)


thumbnails.describe = lambda: "8x8 colour thumbnails of each patch (no learned features)"


def photos_of(units, n_photos: int) -> float:
    """Mean number of distinct source photographs among the units' top patches (view i shows photo i % n_photos)."""
    return float(np.mean([len({int(Path(p.path).stem.split("_")[0]) % n_photos for p in u.top}) for u in units]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--atoms", type=int, default=32)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--imagenet", metavar="REPO", help="a git mirror of EliSchwartz/imagenet-sample-images: "
                   "--images distinct photographs from it instead of views of the bundled ones")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "blocklens-bench-readability"))
    args = p.parse_args()
    torch.set_num_threads(1)

    import blocklens as bl
    from bench_dictionary import make_folder
    from blocklens.dataset.dictionary.readability import dictionary_units
    from blocklens.dataset.readability import Judge, readability
    from blocklens.images import bundled_images

    work = Path(args.work)
    if args.imagenet:
        from bench_text_cue import make_folder as imagenet_folder

        folder = work / f"imagenet{args.images}"
        if len(list(folder.glob("*.jpg"))) != args.images:
            folder.mkdir(parents=True, exist_ok=True)
            imagenet_folder(args.imagenet, folder, args.images, seed=0, stamp=False)
        n_photos = args.images
    else:
        folder = make_folder(work / f"f{args.images}", args.images)
        shared = HERE.parent.parent / "shared" / "images"
        n_photos = len(set(bundled_images()) | {q.stem for q in (shared.glob("*") if shared.is_dir() else [])
                                                if q.suffix.lower() in (".jpg", ".png", ".jpeg")})
    model = bl.load_model()
    t = time.perf_counter()
    d = bl.concept_dictionary(model, folder, layer="blocks.11", atoms=args.atoms, method="nmf", icons=False,
                              stability=False, store=work / "store", progress=False)
    t_dict = time.perf_counter() - t
    t = time.perf_counter()
    atoms, chans = dictionary_units(d, model)
    lite = Judge(model)
    scores = {}
    for name, judge in (("lite0", lite), ("thumbnails", thumbnails)):
        t1 = time.perf_counter()
        got = readability(model, atoms + chans, judge=judge, trials=args.trials, root=d.folder)
        scores[name] = ({c: r.subset(u.name for u in atoms) for c, r in got.items()},
                        {c: r.subset(u.name for u in chans) for c, r in got.items()}, time.perf_counter() - t1)
    t_read = time.perf_counter() - t
    q = d.quality
    what = "ImageNet photographs (one per class)" if args.imagenet else f"augmented views of {n_photos} photographs"
    print(f"{len(d.images)} {what}; {args.atoms} NMF atoms at blocks.11 of "
          f"efficientnet_lite0 (explained variance {q['explained_variance']:.1%}); dictionary {t_dict:.0f} s, "
          f"readability {t_read:.0f} s (both judges), single-threaded")
    print(f"10 top, 10 bottom, 10 random patches per unit; {args.trials} trials per unit and contrast; "
          "score ± se over units (± binomial se over trials)\n")
    print("| judge | units | top vs bottom | top vs random | photos among the top 10 | judge s |")
    print("|---|---|---|---|---|---|")
    for name, (a, c, secs) in scores.items():
        for kind, units, r in (("atoms", atoms, a), ("channels", chans, c)):
            f = {k: f"{v.score:.3f} ± {v.se_units:.3f} (± {v.se:.3f})" for k, v in r.items()}
            skipped = len(r["bottom"].skipped)
            judged = lite.describe() if name == "lite0" else thumbnails.describe()
            print(f"| {judged} | {kind} ({r['bottom'].units}{f', {skipped} skipped' if skipped else ''}) | "
                  f"{f['bottom']} | {f['random']} | {photos_of(units, n_photos):.1f} | {secs:.0f} |", flush=True)

if __name__ == "__main__":
    main()
