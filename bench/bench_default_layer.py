"""Which layer should class concepts and the dictionary use by default? Measured on heads planted on several marks.

For each mark (tests/planted.py's square and disc, and a cross the tests do not use), a two-class head over frozen
Lite0 features is trained on paired views where only the "marked" class carries the mark (as the tests do), and at
each candidate layer:

- ``class_concepts(head, folder, "marked", layer)``: is its first concept on the mark (>= 6 of its top 8 patches
  within half a grid cell of the mark's centre), and what share of the marked images does removing it flip;
- ``concept_dictionary(head, folder, layer)``: is there an atom on the mark (>= 6 of 8), its probability drop of
  "marked" and its flips, and is it the first atom ``for_class("marked")``.

Run: python bench/bench_default_layer.py [--per-class 24] (about 15 min on 2 cores).
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import planted  # noqa: E402

import blocklens as bl  # noqa: E402

CROSS = {"shape": "cross", "colour": (255, 220, 0), "centre": (120, 188), "size": 28}
MARKS = {"square": planted.MARK, "disc": planted.OTHER_MARK, "cross": CROSS}
LAYERS = ["blocks.9", "blocks.11", "blocks.13", "blocks.15"]


def on_mark(examples, mark, cell) -> int:
    mx, my = mark["centre"]
    return sum(abs(e.centre[0] - mx) <= cell / 2 and abs(e.centre[1] - my) <= cell / 2 for e in examples[:8])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-class", type=int, default=24)
    args = ap.parse_args()
    lite0 = bl.load_model()
    print("| mark | layer | concepts: first on mark (top 8) | its flips | dictionary: atom on mark (top 8) | "
          "its prob drop | its flips | first for the class | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, mark in MARKS.items():
            root = planted.make_folder(Path(tmp) / name, args.per_class, mark=mark)
            head = planted.train_head(lite0, root)
            for layer in LAYERS:
                t = time.perf_counter()
                cell = 224 / head.layer(layer).width
                c = bl.class_concepts(head, root, "marked", layer=layer, store=Path(tmp) / "s", icons=False,
                                      progress=False)
                first = c.concepts[0]
                d = bl.concept_dictionary(head, root, layer=layer, icons=False, store=Path(tmp) / "s",
                                          stability=False, progress=False)
                best = max(d.atoms, key=lambda a: on_mark(a.examples, mark, cell))
                drive = next((x for x in best.drives if x.label == "marked"), None)
                top = d.for_class("marked")[0][0].index == best.index
                print(f"| {name} | {layer} | {on_mark(first.examples, mark, cell)}/8 | {first.flips:.0%} | "
                      f"{on_mark(best.examples, mark, cell)}/8 | {drive.prob_drop if drive else 0:.2f} | "
                      f"{drive.flips if drive else 0:.0%} | {'yes' if top else 'no'} | {time.perf_counter() - t:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
