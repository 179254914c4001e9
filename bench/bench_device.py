"""The device benchmark: every model-bound job of blocklens against a bare forward+backward floor, in one run.

For each task the floor is measured in the same run, on the same device, with the same model
(EfficientNet-Lite0), batch and input size: a forward and a backward pass to the input (what renders and
attributions need; the weights are frozen), nothing else. Its figure is images per second. Each task's ratio is

    ratio = floor images/s / task items/s  =  task seconds per item / floor seconds per image

that is, what one item costs in bare forward+backward passes. An icon of S steps ideally costs about S passes
(coarse-to-fine spends half its steps at half size, so the quick preset can cost fewer); an indexed image with
attribution to 5 classes about 1 forward and 5 backward passes; the rest is what blocklens adds around the model
(transforms, hooks, decoding, the store). Items: an icon; the cold ``explain dog`` (one report); an indexed
image; an image of the class concepts' folder; for the dictionary, one image's rows at the layer (7 x 7 = 49 at
blocks.11), so its ratio is training on an image's rows in floor passes.

Tasks (sizes: ``--sizes gpu``, the default on CUDA, or ``--sizes cpu``, the default on a CPU):

- icons/s at the quick and default presets: ``bl.icons`` of blocks.11 channels, no store, in batches;
- a cold ``blocklens explain dog``: a fresh process and an empty store (the reference pack as installed);
- index images/s: ``build_index`` over a folder of N images (2000 on a GPU) through the image pipeline,
  layers blocks.7 and blocks.11, 5 classes, chunks of 32, in this process;
- class concepts images/s: ``class_concepts`` over the first N/4 images of that folder (labels from the model's
  predictions), ``k=3``, no icons;
- dictionary training rows/s: ``concept_dictionary`` (NMF, 32 atoms, no stability fit, no icons) over the same
  N/4 images: positions x epochs / training seconds.

Run: ``bench/device.sh`` (which passes its arguments on), or
``python bench/bench_device.py [--device auto|cpu|cuda|cuda:N] [--sizes cpu|gpu] [--amp]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: Per sizes: icons (quick count, default count, batch), the index folder's images, floor repeats.
SIZES = {"gpu": dict(quick=64, default=32, icon_batch=32, images=2000, repeats=10),
         "cpu": dict(quick=8, default=4, icon_batch=4, images=64, repeats=3)}
LAYER = "blocks.11"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def floor(model, device: str, batch: int, size: int, repeats: int) -> float:
    """Images per second of a bare forward and backward pass (gradient to the input) at ``batch`` x ``size`` px."""
    x = torch.rand(batch, 3, size, size, device=device)

    def once():
        xi = x.clone().requires_grad_(True)
        model.module(model.input_from_rgb(xi)).sum().backward()

    for _ in range(2):
        once()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        sync(device)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def timed(device: str, fn):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    ap.add_argument("--sizes", choices=list(SIZES), help="task sizes (default: gpu on CUDA, cpu on a CPU)")
    ap.add_argument("--default-icons", type=int, help="default-preset icons to render (default: the sizes'; 0 leaves "
                    "them out, e.g. on a busy CPU, where each takes minutes)")
    ap.add_argument("--amp", action="store_true", help="also the icons in bfloat16 autocast (render(amp='bf16'))")
    ap.add_argument("--skip", nargs="*", default=[], help="tasks to leave out: icons explain index concepts "
                    "dictionary")
    args = ap.parse_args()

    import blocklens as bl
    from blocklens.models import resolve_device
    from blocklens.recipes import PRESETS

    device = resolve_device(args.device)
    sizes = dict(SIZES[args.sizes or ("gpu" if device.startswith("cuda") else "cpu")])
    if args.default_icons is not None:
        sizes["default"] = args.default_icons
    model = bl.load_model("efficientnet_lite0", device=device)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else \
        f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    print(f"# blocklens device benchmark: {device} ({name}), torch {torch.__version__}, sizes "
          f"{args.sizes or ('gpu' if device.startswith('cuda') else 'cpu')} {sizes}; load average "
          f"{os.getloadavg()[0]:.2f} at start", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="blocklens-bench-device-"))
    rows = []  # (task, setting, figure text, floor images/s, ratio)
    floors: dict[tuple[int, int], float] = {}

    def floor_of(batch: int, size: int) -> float:
        if (batch, size) not in floors:
            floors[(batch, size)] = floor(model, device, batch, size, sizes["repeats"])
        return floors[(batch, size)]

    def row(task: str, setting: str, per_s: float, unit: str, fl: tuple[int, int], per_item: float = 1.0) -> None:
        f = floor_of(*fl)
        ratio = f / (per_s / per_item)
        rows.append((task, setting, f"{per_s:.3g} {unit}", f"{f:.3g} (batch {fl[0]}, {fl[1]} px)", f"{ratio:.3g}"))
        print(f"  {task}: {per_s:.3g} {unit}; floor {f:.3g} images/s; ratio {ratio:.3g}", flush=True)

    t_all = time.perf_counter()
    try:
        if "icons" not in args.skip:
            batch = sizes["icon_batch"]
            modes = [("quick", None), ("default", None)] + ([("quick", "bf16"), ("default", "bf16")] if args.amp else [])
            for preset, amp in modes:
                n = sizes[preset]
                if not n:
                    continue
                extra = {"amp": amp} if amp else {}
                s, _ = timed(device, lambda: bl.icons(model, LAYER, range(n), store=False, batch=batch,
                                                      progress=False, preset=preset, **extra))
                steps = PRESETS[preset]["icons"]["steps"]
                row(f"icons, {preset} preset" + (" (amp bf16)" if amp else ""),
                    f"{n} of {LAYER}, batches of {batch}, {steps} steps", n / s, "icons/s", (batch, 128))

        if "explain" not in args.skip:
            store = tmp / "explain-store"
            env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "blocklens", "explain", "dog", "--device", device, "--store",
                                str(store), "--out", str(tmp / "dog.blocklens.html"), "--quiet"],
                               capture_output=True, text=True, env=env)
            s = time.perf_counter() - t
            if r.returncode:
                raise SystemExit(f"explain dog failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
            row("cold explain dog", "a fresh process, empty store", 1 / s, "reports/s "
                f"({s:.1f} s)", (1, 224))

        folder = tmp / "images"
        if {"index", "concepts", "dictionary"} - set(args.skip):
            from bench_index import make_images

            folder.mkdir()
            make_images(folder, sizes["images"])
        if "index" not in args.skip:
            s, idx = timed(device, lambda: bl.build_index(folder, model, ["blocks.7", "blocks.11"],
                                                          store=tmp / "index-store", chunk=32, progress=False))
            row("index", f"{idx.count} images, blocks.7 + blocks.11, 5 classes, chunks of 32",
                idx.count / s, "images/s", (32, 224))

        small = tmp / "small"
        if {"concepts", "dictionary"} - set(args.skip):
            small.mkdir()
            for p in sorted(folder.iterdir())[:max(24, sizes["images"] // 4)]:
                shutil.copy(p, small / p.name)
        n_small = len(list(small.iterdir())) if small.exists() else 0
        if "concepts" not in args.skip:
            s, res = timed(device, lambda: bl.class_concepts(model, small, "malamute", LAYER, 3, icons=False,
                                                             store=tmp / "concepts-store", progress=False))
            row("class concepts", f"malamute over {n_small} images (labels predicted), k=3, no icons",
                n_small / s, "images/s", (16, 224))

        if "dictionary" not in args.skip:
            d = bl.concept_dictionary(model, small, LAYER, 32, "nmf", stability=False, icons=False,
                                      store=tmp / "dictionary-store", progress=False)
            info = model.layer(LAYER)
            per_image = info.height * info.width
            trained = d.quality["train_positions"] * d.options["epochs"]
            row("dictionary training", f"NMF, 32 atoms, {d.quality['train_positions']} rows x "
                f"{d.options['epochs']} epochs", trained / d.timings["train"], "rows/s", (32, 224),
                per_item=per_image)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{device} ({name}); {time.perf_counter() - t_all:.0f} s in all; load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    print("ratio = floor images/s / task items/s: what one item costs in bare forward+backward passes of the "
          "same model at that batch and size\n")
    print("| task | setting | figure | floor images/s | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
