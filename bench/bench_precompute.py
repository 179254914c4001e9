"""Precompute throughput and icon store read speed on this machine, as figures from one run.

(a) Units (icons) per minute: ``precompute`` renders the first N channels of LAYER (64 px, 32 steps, batches of
    4) into a fresh store with 1 local worker process and with 2, torch threads per worker = 1 (so 2 workers
    use 2 cores). "end to end" counts from the submission of the first batch to the last result, so it
    includes the workers' start-up (spawn, import torch, load the model, first-call warm-up); "steady" starts
    at the first batch's result.
(b) Read speed, as the web app would serve icons: ``IconStore.get`` (read + full verification: PNG decode,
    pixel checksum) followed by a PNG encode of the icon, on a local folder and on memory://; the bare ``get``;
    and the layer's sprite sheet via ``IconStore.sprite_bytes`` (read + sha256 check).
Run: OMP_NUM_THREADS=1 python bench/bench_precompute.py [--units 32] [--layer blocks.7] [--size 64] [--steps 32]
"""
import argparse
import io
import os
import shutil
import tempfile
import time
import uuid

from blocklens.precompute import precompute
from blocklens.store import IconStore


def read_rate(fn, keys, min_seconds: float = 2.0) -> float:
    """Calls per second of fn(key) over the keys, repeated until min_seconds have passed."""
    n, t0 = 0, time.perf_counter()
    while True:
        for k in keys:
            fn(k)
        n += len(keys)
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", default="blocks.7")
    ap.add_argument("--units", type=int, default=32, help="channels rendered per configuration")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    recipe = dict(size=args.size, steps=args.steps)
    print(f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.2f} before: other processes share "
          f"them), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; {args.units} channels "
          f"of {args.layer}, {args.size} px, {args.steps} steps, batches of {args.batch}, 1 torch thread per worker")
    tmp = tempfile.mkdtemp(prefix="bench-precompute-")
    try:
        stores = {}
        for workers in (1, 2):
            root = os.path.join(tmp, f"w{workers}")
            s = precompute("efficientnet_lite0", [args.layer], f"0-{args.units - 1}", store=root, workers=workers,
                           threads=1, batch=args.batch, progress=False, **recipe)
            assert s["rendered"] == args.units and not s["failed"], s["errors"]
            steady_n = s["rendered"] - min(args.batch, s["rendered"])
            steady = 60 * steady_n / max(1e-9, s["render_seconds"] - s["first_result_seconds"])
            print(f"(a) {workers} worker{'s' if workers > 1 else ' '}: {s['units_per_minute']:7.1f} units/min end to "
                  f"end ({s['render_seconds']:.1f} s, first result after {s['first_result_seconds']:.1f} s), "
                  f"{steady:7.1f} units/min steady")
            stores[workers] = (IconStore(root), s)

        store, s = stores[2]
        keys = list(store.keys())
        mem = IconStore(f"memory://bench-{uuid.uuid4().hex}")
        for k in keys:
            icon = store.get(k)
            mem.put(k, icon.image, icon.meta)

        def serve(st):
            def fn(k):
                buf = io.BytesIO()
                st.get(k).to_pil().save(buf, format="PNG")
                return buf.getvalue()
            return fn

        local_serve = read_rate(serve(store), keys)
        mem_serve = read_rate(serve(mem), keys)
        local_get = read_rate(store.get, keys)
        fp = s["fingerprint"]
        sprite = read_rate(lambda _: store.sprite_bytes(fp, args.layer, s["recipe"]), [0])
        png = store.path_for(keys[0]).stat().st_size
        print(f"(b) get + PNG encode: {local_serve:7.0f} icons/s (local folder), {mem_serve:7.0f} icons/s (memory://); "
              f"get alone {local_get:7.0f} icons/s; {args.size} px icons, {png / 1e3:.1f} kB each")
        print(f"    sprite sheet of {len(keys)} icons: {sprite:7.0f} reads/s (sprite_bytes, sha256 checked)")
        print(f"load average {os.getloadavg()[0]:.2f} after")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # the spawned workers import this file: run only in the main process
    main()
