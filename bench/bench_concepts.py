"""Class concepts: time and memory for a folder of 100 and of 500 images (views of the bundled photographs), one run.

The folder is tests/planted.py's: N/2 views of the six bundled photographs with a small mark and the same N/2
views without it, in two class subfolders; the model is Lite0 with a two-class head trained on them (as the test
does). ``class_concepts(model, folder, "marked")`` runs at the model's default layer (the report's deeper one) with
its defaults (16 evidence-weighted positions per image, k chosen by resampled stability, every image scanned, the
marked ones measured, up to 200 plain ones audited), icons off (they are store-cached pictures, not the cost of the
analysis), in a fresh store, in a fresh process per size (so the peak RSS is that run's). Images per second counts
every scanned image over the whole run (scan, factorize, measure, patches).
Run: OMP_NUM_THREADS=2 python bench/bench_concepts.py [--sizes 100 500]
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one(n: int) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    import planted

    import blocklens as bl
    from blocklens.recipes import default_layers

    lite0 = bl.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        root = planted.make_folder(Path(tmp) / "photos", n // 2)
        model = planted.train_head(lite0, root)
        layer = default_layers(model)[-1]
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        r = bl.class_concepts(model, root, "marked", layer=layer, store=Path(tmp) / "store", icons=False,
                              progress=False)
        seconds = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    first = r.concepts[0]
    return {"images": n, "layer": layer, "k": r.k, "seconds": round(seconds, 1), "images_per_s": round(n / seconds, 2),
            "timings": r.timings, "peak_rss_mb": round(rss / 1024), "rss_before_mb": round(rss0 / 1024),
            "rows": r.sample["rows"], "top_flips": f"{first.flipped}/{first.predicted}",
            "top_centre": [round(v) for v in first.location["centre"]], "mark": list(planted.MARK["centre"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{n:4d} images at {r['layer']}: {r['seconds']:6.1f} s ({r['images_per_s']:.2f} images/s; "
              f"scan {r['timings']['scan']:.0f} s, factorize {r['timings']['factorize']:.0f} s, measure "
              f"{r['timings']['measure']:.0f} s), peak RSS {r['peak_rss_mb']} MB (after loading: "
              f"{r['rss_before_mb']} MB), k={r['k']}, {r['rows']} sampled positions; top concept flips "
              f"{r['top_flips']}, centred at {r['top_centre']} (mark at {r['mark']})", flush=True)
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"{b['images']}/{a['images']} = {b['images'] / a['images']:.0f}x the images: {b['seconds'] / a['seconds']:.1f}x "
              f"the time, {(b['peak_rss_mb'] - b['rss_before_mb']) / max(1, a['peak_rss_mb'] - a['rss_before_mb']):.1f}x "
              "the memory the run added")


if __name__ == "__main__":
    main()
