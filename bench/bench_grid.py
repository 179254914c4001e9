"""Do activation-grid icons carry their vectors? Fidelity, cost and pictures of bl.activation_grid on Lite0.

For each layer (default blocks.9, signed block output, 112 channels at 14x14; and blocks.7, 80 channels at 14x14)
the grid of dog.jpg is rendered with the library defaults (48 px cells, 256 steps, 6 NMF groups, batches of 64
cells). Each cropped cell is fed back to the model; its activation at the layer (mean over positions) is compared
by cosine with every cell's target vector. A cell *matches* when its cosine to its own vector beats its cosine
to at least 80% of the other cells' vectors. Target: at least 80% of cells match.

Printed per layer: fraction matching, top-1 (own vector the nearest of all, a stricter figure), median own cosine,
objective at the start and the end, wall time and time per step.
Pictures: docs/grid_<layer>.png -- the photo crop, the grid, the magnitude grid, side by side.

    python bench/bench_grid.py                       # defaults, both layers
    python bench/bench_grid.py --pows 1,2,4          # also compare cosine powers on the first layer
    python bench/bench_grid.py --threads 0           # torch's default thread count instead of 1

Threads: the bench runs torch on 1 intra-op thread by default. A step (64 cells of 48 px through blocks.9,
forward and backward) on the 2-core development machine: nearly idle, 0.6-0.8 s with one thread and 0.4-0.5 s
with torch's default of two; while two other benchmarks ran, 0.7-0.9 s with one thread but 5.1-5.2 s with two
(the two threads wait on each other whenever another process holds a core), which would put the bench far past
its ~12 minute budget. One thread costs ~1.5x when idle and saves ~6x when shared. Measured with one thread:
about 130 s per layer, 260 s for both, plus model loading.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image

import blocklens as bl
from blocklens.optvis.grid import DEFAULT_COSSIM_POW, activation_grid, cell_fidelity

ROOT = Path(__file__).resolve().parents[1]


def photo() -> Path:
    shared = ROOT.parent / "shared" / "images" / "dog.jpg"
    return shared if shared.is_file() else bl.bundled_image("dog")


def side_by_side(images: list[Image.Image], pad: int = 8) -> Image.Image:
    h = max(im.height for im in images)
    sheet = Image.new("RGB", (sum(im.width for im in images) + pad * (len(images) + 1), h + 2 * pad), "white")
    x = pad
    for im in images:
        sheet.paste(im.convert("RGB"), (x, pad))
        x += im.width + pad
    return sheet


def run(model, image, layer: str, args, cossim_pow: float, save: bool) -> dict:
    t = time.perf_counter()
    grid = activation_grid(model, image, layer, cell=args.cell, steps=args.steps, cossim_pow=cossim_pow,
                           seed=args.seed, progress=None if args.progress else False)
    wall = time.perf_counter() - t
    fid = cell_fidelity(model, grid)
    h, w = grid.shape
    print(f"{layer:<9} {h}x{w} cossim_pow={cossim_pow:g}: {100 * fid['fraction_matching']:.0f}% of "
          f"{fid['n_cells']} cells match (target 80%); own vector nearest of all (top-1) for {100 * fid['top1']:.0f}%; "
          f"median own cosine {fid['median_own_cosine']:.3f}; objective {grid.history[:8].mean():.3g} -> "
          f"{grid.history[-16:].mean():.3g}; {wall:.0f} s ({wall / args.steps:.2f} s/step incl. setup)",
          flush=True)
    if save:
        plain, faded = grid.image(), grid.image(magnitude=True)
        crop = model.crop(image).resize((plain.width, plain.height), Image.LANCZOS)
        out = ROOT / "docs" / f"grid_{layer}.png"
        out.parent.mkdir(exist_ok=True)
        side_by_side([crop, plain, faded]).save(out)
        print(f"  saved {out.relative_to(ROOT)} (photo | grid | magnitude grid)")
    return dict(fid, wall=wall)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", nargs="+", default=["blocks.9", "blocks.7"])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--cell", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cossim-pow", type=float, default=DEFAULT_COSSIM_POW)
    ap.add_argument("--pows", default="", help="comma-separated cosine powers to compare on the first layer")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default; see above)")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = bl.load_model()
    image = photo()
    print(f"activation grids of {image.name}, {args.steps} steps, {args.cell} px cells, {torch.get_num_threads()} "
          f"threads", flush=True)
    results = {}
    t0 = time.perf_counter()
    for layer in args.layers:
        results[layer] = run(model, image, layer, args, args.cossim_pow, save=True)
    for p in [float(s) for s in args.pows.split(",") if s.strip()]:
        if p != args.cossim_pow:
            run(model, image, args.layers[0], args, p, save=False)
    print(f"total {time.perf_counter() - t0:.0f} s")
    ok = all(r["fraction_matching"] >= 0.8 for r in results.values())
    print("PASS" if ok else "BELOW TARGET", "(at least 80% of cells match on every layer)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
