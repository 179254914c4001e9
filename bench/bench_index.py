"""Activation index throughput on this machine: images per second for 1 and 2 local worker processes, one run.

The folder: N images made from the 6 bundled photos (mirrored, cropped, rotated copies; written once to a
temporary folder). Each configuration builds the whole index into a fresh store (so nothing is resumed):
``build_index(folder, "efficientnet_lite0", LAYERS, workers=W, threads=1)`` with the default options (k=16,
1 sample per image, attribution to the top 5 classes: one forward and 5 backward passes per batch). The time
is end to end: hashing the folder, spawning the workers (import torch, load the model), every chunk, the
merge and the receptive fields. Configurations run interleaved, ``--repeats`` times; the median is reported.
``workers=0`` (in this process, no spawn) is shown for reference.
Run: OMP_NUM_THREADS=1 python bench/bench_index.py [--images 96] [--chunk 16] [--repeats 3]
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

from blocklens.images import bundled_images
from blocklens.dataset.index import build_index

LAYERS = ["blocks.7", "blocks.11"]


def make_images(folder: Path, n: int) -> None:
    photos = [Image.open(p).convert("RGB") for p in bundled_images().values()]
    i = 0
    while i < n:
        for img in photos:
            if i >= n:
                break
            v = i // len(photos)
            w, h = img.size
            im = ImageOps.mirror(img) if v % 2 else img
            f = 1 - 0.04 * (v // 2 % 8)
            cw, ch = int(w * f), int(h * f)
            im = im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
            if v >= 16:
                im = im.rotate(5 * (v - 15), resample=Image.BICUBIC)
            im.save(folder / f"img{i:04d}.jpg", quality=92)
            i += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--classes", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-"))
    try:
        folder = tmp / "images"
        folder.mkdir()
        make_images(folder, args.images)
        print(f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.2f} before: other processes share them), "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; {args.images} images at 224 px, layers "
              f"{', '.join(LAYERS)}, chunks of {args.chunk}, attribution to {args.classes} classes, 1 torch thread "
              "per worker")
        times = {w: [] for w in (0, 1, 2)}
        for r in range(args.repeats):
            for w in times:
                store = tmp / f"store-{w}-{r}"
                t = time.perf_counter()
                idx = build_index(folder, "efficientnet_lite0", LAYERS, store=store, chunk=args.chunk, workers=w,
                                  threads=1, classes=args.classes, progress=False)
                times[w].append(time.perf_counter() - t)
                assert idx.count == args.images
                shutil.rmtree(store)
        med = {w: statistics.median(v) for w, v in times.items()}
        for w, s in med.items():
            what = "this process (no spawn)" if w == 0 else f"{w} worker process{'es' if w > 1 else ''}"
            print(f"  {what:<26} {args.images / s:6.2f} images/s  (median of {args.repeats}: {s:.1f} s; runs "
                  + ", ".join(f"{t:.1f}" for t in times[w]) + " s)")
        print(f"  2 workers / 1 worker: {med[1] / med[2]:.2f}x the images per second")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
