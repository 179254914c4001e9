"""How much stopping the forward pass after the deepest needed layer saves (EfficientNet-Lite0, CPU).

Prints, for an early and a mid layer, the median time of `model.activations(x, layer)` (stopped) and of the
same capture with the full forward, as a ratio. Run: python bench/bench_probe_stop.py [--repeats N]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import blocklens as bl  # noqa: E402
from _timing import median_times  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = bl.load_model()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} interleaved runs")
    for size, batch in [(224, 1), (128, 8)]:
        x = torch.randn(batch, 3, size, size)
        for layer in ["blocks.3", "blocks.9"]:
            t = median_times({
                "stopped": lambda: model.activations(x, layer, stop=True),
                "full": lambda: model.activations(x, layer, stop=False),
            }, repeats=args.repeats)
            print(f"{size}px batch {batch:<2} {layer:<9}: stopped {t['stopped'] * 1e3:7.1f} ms, full "
                  f"{t['full'] * 1e3:7.1f} ms  -> stopped/full = {t['stopped'] / t['full']:.2f} "
                  f"(saves {100 * (1 - t['stopped'] / t['full']):.0f}%)")


if __name__ == "__main__":
    main()
