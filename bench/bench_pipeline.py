"""The image pipeline of folder jobs: how much of an index's time is decoding, and images per second with 0, 1 and 2
loader threads (same layers and options each time, a fresh store each time, one run of each in one process).

    python bench/bench_pipeline.py [--folder DIR] [--n 128] [--layers blocks.11] [--classes 5]

Without --folder it uses views of the bundled photographs. The decode share is the time of
``Model.prepare`` over the images (decode, resize and crop, tensor) over the time of the index with 0 loader threads.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

import blocklens as bl
from blocklens.dataset.index import build_index


def folder_of(args) -> Path:
    if args.folder:
        src = sorted(p for p in Path(args.folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        out = Path(tempfile.mkdtemp(prefix="bl-pipe-"))
        for p in src[: args.n]:
            shutil.copy(p, out / p.name)
        return out
    from PIL import Image

    out = Path(tempfile.mkdtemp(prefix="bl-pipe-"))
    names = ["dog", "chelsea", "coffee", "collies", "giraffe", "multiple_dogs"]
    for i in range(args.n):
        Image.open(bl.bundled_image(names[i % 6])).convert("RGB").rotate(3 * i).save(out / f"{i:04d}.jpg", quality=90)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--layers", nargs="+", default=["blocks.11"])
    ap.add_argument("--classes", type=int, default=5)
    args = ap.parse_args()
    folder = folder_of(args)
    images = sorted(p.name for p in folder.iterdir())
    model = bl.load_model("efficientnet_lite0")
    print(f"{len(images)} images of {args.folder or 'the bundled photographs'}, layers {' '.join(args.layers)}, "
          f"classes {args.classes}, torch threads {torch.get_num_threads()}")
    t = time.perf_counter()
    for name in images:
        model.prepare(folder / name)
    decode = time.perf_counter() - t
    rates = {}
    for workers in (0, 1, 2):
        store = Path(tempfile.mkdtemp(prefix="bl-pipe-store-"))
        t = time.perf_counter()
        build_index(folder, model, args.layers, store=store, classes=args.classes, progress=False,
                    loader_workers=workers)
        rates[workers] = (time.perf_counter() - t, len(images) / (time.perf_counter() - t))
        shutil.rmtree(store)
    base = rates[0][0]
    print(f"decode (Model.prepare, one thread): {decode:.1f} s = {decode / base:.0%} of the index with 0 loader threads")
    print("loader threads   seconds   images/s   vs 0 threads")
    for w, (sec, rate) in rates.items():
        print(f"{w:>14}   {sec:7.1f}   {rate:8.1f}   {base / sec:10.2f}x")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
