"""The concept dictionary's quality and cost: NMF and SAE at three sizes on 500 images, and how time and memory grow
from 500 to 2000 images.

The folder: augmented views (random 60-100% crops, some mirrored) of the bundled and shared photographs. Each
configuration runs in its own process (peak resident memory, ``ru_maxrss``, is that process's: the model and torch
included; the first line gives a process that only loads the model, for comparison). Collected activations are
shared between configurations through one store (the collect phase runs once per folder size), so the times given
are the training's and the whole run's (collect, train twice for stability, survey, removals), on this machine with
whatever else ran beside it.

    python bench/bench_dictionary.py                 the table (about 15 min on 2 cores)
    python bench/bench_dictionary.py --quick         100 and 200 images, sizes 16 and 32
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` augmented views of the bundled and shared photographs (256 px squares), written once."""
    from PIL import Image

    from blocklens.images import bundled_images

    if root.exists() and len(list(root.glob("*.jpg"))) == n:
        return root
    root.mkdir(parents=True, exist_ok=True)
    photos = dict(bundled_images())
    shared = HERE.parent.parent / "shared" / "images"
    for p in sorted(shared.glob("*")) if shared.is_dir() else []:
        if p.suffix.lower() in (".jpg", ".png", ".jpeg") and p.stem not in photos:
            photos[p.stem] = p
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    for i in range(n):
        img = Image.open(photos[names[i % len(names)]]).convert("RGB")
        s = int(min(img.size) * rng.uniform(0.6, 1.0))
        x0, y0 = int(rng.integers(0, img.width - s + 1)), int(rng.integers(0, img.height - s + 1))
        v = img.crop((x0, y0, x0 + s, y0 + s)).resize((256, 256), Image.BICUBIC)
        (v.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else v).save(root / f"{i:05d}.jpg", quality=92)
    return root


def one(args) -> None:
    """One configuration in this process: print its figures as JSON."""
    import blocklens as bl

    model = bl.load_model()
    if args.method == "none":
        print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    t = time.perf_counter()
    d = bl.concept_dictionary(model, args.folder, atoms=args.atoms, method=args.method, icons=False,
                              store=args.store, progress=False)
    q = d.quality
    print(json.dumps({"seconds": time.perf_counter() - t, "timings": d.timings, "ev": q["explained_variance"],
                      "pca_ev": q["pca"]["explained_variance"], "active": q["active_per_position"],
                      "ch_active": q["channels"]["active_per_position"], "dead": q["dead"],
                      "stability": q["stability"], "pca_stability": q["pca"]["stability"],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "epochs": d.options["epochs"], "train_positions": q["train_positions"]}))


def run(folder: Path, store: Path, method: str, atoms: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", "--folder", str(folder), "--store", str(store),
                          "--method", method, "--atoms", str(atoms)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--folder"), p.add_argument("--store"), p.add_argument("--method"), p.add_argument("--atoms", type=int)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "blocklens-bench-dictionary"))
    args = p.parse_args()
    if args.one:
        return one(args)
    work = Path(args.work)
    sizes, counts = ((16, 32), (100, 200)) if args.quick else ((16, 32, 64), (500, 1000, 2000))
    base = run(work, work / "store", "none", 0)["rss_mb"]
    print(f"a process that only loads the model: {base:.0f} MB peak resident")
    print(f"\n{counts[0]} augmented photos, blocks.11 of efficientnet_lite0 (7x7x192, signed: 384 columns); "
          "quality on held-out images (every 10th)")
    print("| method | atoms | explained variance (PCA) | active / position (channels) | dead | stability (PCA) "
          "| epochs | train s | total s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    folder = make_folder(work / f"f{counts[0]}", counts[0])
    for method in ("nmf", "sae"):
        for k in sizes:
            r = run(folder, work / "store", method, k)
            print(f"| {method} | {k} | {r['ev']:.1%} ({r['pca_ev']:.1%}) | {r['active']:.1f} ({r['ch_active']:.0f}) | "
                  f"{r['dead']} | {r['stability']:.2f} ({r['pca_stability']:.2f}) | {r['epochs']} | "
                  f"{r['timings']['train']:.1f} | {r['seconds']:.1f} | {r['rss_mb']:.0f} |", flush=True)
    print(f"\ngrowth with the folder ({sizes[1]} atoms; collect, train, survey and removals each timed)")
    print("| method | images | positions | collect s | train s | remove s | total s | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for n in counts:
        folder = make_folder(work / f"f{n}", n)
        for method in ("nmf", "sae"):
            r = run(folder, work / f"store-{n}-{method}", method, sizes[1])   # a fresh store: nothing reused
            t = r["timings"]
            print(f"| {method} | {n} | {r['train_positions']} | {t['collect']:.1f} | {t['train']:.1f} | "
                  f"{t['remove']:.1f} | {r['seconds']:.1f} | {r['rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
