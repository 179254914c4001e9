"""blocklens on real torchvision / timm architectures (randomly initialised with torch.manual_seed(0); nothing is
downloaded): layers found by layout, default layers, explain() time (numbers only), whether icons render at the
model's input size, and hooks left on the module after a normal run and after one that raised.

Run in .venv-arch (torchvision does not import beside the main .venv's CPU torch):
    .venv-arch/bin/python bench/bench_architectures.py [--models resnet50,vit_b_16]
Prints a markdown table; a cell that failed shows the exception's type and the start of its message. explain()
is cut off after --explain-timeout seconds (a cost bound that does not hold would otherwise run for hours).
"""
import argparse
import signal
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "arch"))


def short(e: BaseException, n: int = 70) -> str:
    msg = str(e).replace("\n", " ").replace("|", "/")
    return f"{type(e).__name__}: {msg[:n]}" + ("..." if len(msg) > n else "")


def main():
    try:
        import timm  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as e:
        print(f"skipped: torchvision / timm do not import here ({short(e)}); run with .venv-arch/bin/python")
        return
    import torch

    import blocklens as bl
    from archspecs import MID_LAYER, MODELS, total_hooks, wrapped

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--explain-timeout", type=int, default=300, metavar="S")
    args = ap.parse_args()

    def alarm(*_):
        raise TimeoutError(f"still running after {args.explain_timeout} s")

    signal.signal(signal.SIGALRM, alarm)
    image = bl.bundled_image("dog")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    rows = []
    for model_id in args.models.split(","):
        m = wrapped(model_id)
        net = m.module
        row = {"model": model_id}
        t = time.perf_counter()
        try:
            infos = list(m.layers)
            counts = Counter(getattr(i, "layout", None) or "?" for i in infos)
            row["layers"] = f"{len(infos)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            if "?" in counts:
                row["layers"] += f" (no layout; spatial {sum(i.spatial for i in infos)})"
        except Exception as e:
            row["layers"] = short(e)
        row["discover"] = f"{time.perf_counter() - t:.1f}"
        try:
            t = time.perf_counter()
            signal.alarm(args.explain_timeout)
            try:
                e = bl.explain(image, model=m, preset="quick", icons=False, grids=False, store=False,
                               progress=False)
            finally:
                signal.alarm(0)
            row["explain"] = f"{time.perf_counter() - t:.1f} s"
            row["default"] = ", ".join(f"{l.layer} {'x'.join(map(str, l.shape))}" for l in e.layers)
        except Exception as err:
            row["explain"] = short(err)
            try:
                from blocklens.recipes import default_layers

                row["default"] = ", ".join(default_layers(m))
            except Exception as err2:
                row["default"] = short(err2)
        try:
            layer = MID_LAYER[model_id]
            t = time.perf_counter()
            r = bl.render(m, [f"{layer}:0", f"{layer}:1"], size=56, steps=4, progress=False)
            ok = r.images.shape[:3] == (2, 56, 56) and bool(torch.isfinite(torch.from_numpy(r.images)).all())
            row["render"] = f"{'ok' if ok else 'BAD ' + str(r.images.shape)} ({time.perf_counter() - t:.1f} s)"
        except Exception as err:
            row["render"] = short(err)
        normal = total_hooks(net)
        raised = "-"
        try:
            def boom(_t):
                raise RuntimeError("boom")

            with m.probe([MID_LAYER[model_id]], edit={MID_LAYER[model_id]: boom}) as p:
                p.run(torch.rand(1, 3, m.input_size, m.input_size))
        except RuntimeError:
            raised = total_hooks(net)
        except Exception as err:
            raised = short(err, 40)
        row["hooks"] = f"{normal} / {raised}"
        rows.append(row)
        print(f"[bench] {model_id} done", file=sys.stderr, flush=True)
    cols = [("model", "model"), ("layers", "layers found (by layout)"), ("discover", "discover s"),
            ("default", "default layers"), ("explain", "explain (numbers only)"),
            ("render", "render 56 px, 2 icons"), ("hooks", "hooks left normal / exception")]
    print("| " + " | ".join(h for _, h in cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "")) for k, _ in cols) + " |")


if __name__ == "__main__":
    main()
