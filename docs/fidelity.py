"""docs/icons_fidelity.png and docs/grid_blocks.7_presets.png: does the quick icon show what the reference shows?

icons_fidelity.png: one column per unit (8 of blocks.11 and 4 of blocks.11.expand.act, the bench's units),
rows: the old quick preset (56 px, 48 steps), the new quick preset, the reference (the default preset: the
reference pack for blocks.11). grid_blocks.7_presets.png: the activation grid of blocks.7 on the dog photo at the
quick and the default presets, side by side.

Run: python docs/fidelity.py [--store DIR] [--no-grid] (icons through the store; the reference icons of
blocks.11.expand.act and the default grid take minutes on a CPU the first time).
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import blocklens as bl
from blocklens.recipes import PRESETS
from blocklens.sheet import contact_sheet

HERE = Path(__file__).resolve().parent
OLD_QUICK = {"size": 56, "steps": 48, "decay_power": 1.5, "contrast": 0.5}  # the quick preset before issue 19
UNITS = {"blocks.11": [3, 14, 49, 93, 115, 153, 154, 175], "blocks.11.expand.act": [11, 117, 338, 544]}


def labelled_rows(rows: list[tuple[str, list]], names: list[str], cell: int = 112) -> Image.Image:
    sheets = [contact_sheet([np.asarray(i.to_pil().convert("RGB").resize((cell, cell), Image.BICUBIC)) for i in icons],
                            names, columns=len(icons), cell=cell) for _, icons in rows]
    left = 150
    out = Image.new("RGB", (left + sheets[0].width, sum(s.height for s in sheets)), "white")
    draw = ImageDraw.Draw(out)
    y = 0
    for (title, _), s in zip(rows, sheets):
        out.paste(s, (left, y))
        draw.text((6, y + s.height // 2 - 12), title, fill="black")
        y += s.height
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--no-grid", action="store_true")
    args = ap.parse_args()
    model = bl.load_model()
    store = bl.IconStore(args.store)
    rows = {"old quick": [], "quick (new)": [], "reference": []}
    names = []
    for layer, units in UNITS.items():
        rows["old quick"] += bl.icons(model, layer, units, store=store, preset="default", **OLD_QUICK)
        rows["quick (new)"] += bl.icons(model, layer, units, store=store, preset="quick")
        rows["reference"] += bl.icons(model, layer, units, store=store, preset="default")
        names += [f"{layer.replace('blocks.', 'b')}:{u}" for u in units]
    q = PRESETS["quick"]["icons"]
    titles = ["old quick\n56 px, 48 steps", f"quick (new)\n{q['size']} px, {q['steps']} steps"
              + (", coarse-to-fine" if q.get("coarse") else ""), "reference\n128 px, 512 steps"]
    sheet = labelled_rows(list(zip(titles, rows.values())), names)
    sheet.save(args.out / "icons_fidelity.png")
    print(args.out / "icons_fidelity.png")
    if not args.no_grid:
        from blocklens.analyses.common import prepare
        from blocklens.explain import cached_grid

        grids = []
        prep = prepare(model, bl.bundled_image("dog"))
        for preset in ("quick", "default"):  # through the store: bench_fidelity.py --grid renders the same ones
            g = cached_grid(model, prep, "blocks.7", store, progress=False, **PRESETS[preset]["grid"])
            grids.append(g.image().convert("RGB").resize((420, 420), Image.NEAREST))
        out = Image.new("RGB", (860, 450), "white")
        draw = ImageDraw.Draw(out)
        for i, (g, t) in enumerate(zip(grids, ["quick preset", "default preset"])):
            out.paste(g, (10 + i * 430, 26))
            draw.text((10 + i * 430, 6), f"blocks.7 activation grid, {t}", fill="black")
        out.save(args.out / "grid_blocks.7_presets.png")
        print(args.out / "grid_blocks.7_presets.png")


if __name__ == "__main__":
    main()
