"""explain() on a photo, cold (empty icon store) and warm (everything cached), with the time of each part.

Run: python bench/bench_explain.py [--preset default|quick] [--image PATH] [--store DIR]
Without --store a fresh temporary store makes the first run cold. Prints the timings explain() records.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import blocklens as bl


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--image", default=None)
    ap.add_argument("--store", default=None)
    ap.add_argument("--warm-repeats", type=int, default=3)
    args = ap.parse_args()
    shared = Path(__file__).resolve().parents[2] / "shared" / "images" / "dog.jpg"
    image = args.image or (shared if shared.exists() else bl.bundled_image("dog"))
    model = bl.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        store = bl.IconStore(args.store or tmp)
        cold_entries = len(store)
        t = time.perf_counter()
        e = bl.explain(image, model=model, preset=args.preset, store=store)
        cold = time.perf_counter() - t
        print(f"{image}: {e}")
        print(f"cold ({cold_entries} entries in the store before): {cold:.0f} s; parts: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in e.timings.items()))
        warm = []
        for _ in range(args.warm_repeats):
            t = time.perf_counter()
            e = bl.explain(image, model=model, preset=args.preset, store=store)
            warm.append(time.perf_counter() - t)
        print(f"warm: median {statistics.median(warm):.2f} s over {len(warm)} runs (in-process, model loaded); "
              "parts: " + ", ".join(f"{k} {v:.2f} s" for k, v in e.timings.items()))


if __name__ == "__main__":
    main()
