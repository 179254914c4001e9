"""Make docs/atlas_blocks.11.png (and, with --screenshot, docs/ui_atlas.png: its page with a cell hovered): an activation atlas of the bundled photos.

Six photos give six points at one sample per image, too few for a map, so the folder is the 6 bundled photos
plus 90 mirrored, cropped and rotated copies (bench/bench_index.py's ``make_images``: 96 images), and the index
keeps 8 random non-edge positions per image (768 activation vectors of blocks.11, a 7x7 grid). Icons: 80 px,
192 steps. Run: OMP_NUM_THREADS=1 python docs/atlas.py [--store DIR]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bench"))

import blocklens as bl  # noqa: E402
from bench_index import make_images  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", default=None, help="icon store (default: the default store)")
    ap.add_argument("--layer", default="blocks.11")
    ap.add_argument("--grid", type=int, default=10)
    ap.add_argument("--html", default=None, help="also write the atlas page here")
    ap.add_argument("--units", default="", help="also docs/examples_LAYER.png: for these channels (e.g. 3,17,40), "
                    "the icon beside its top and bottom dataset examples")
    ap.add_argument("--screenshot", action="store_true", help="also docs/ui_atlas.png: the page in chromium, the "
                    "largest cell hovered")
    args = ap.parse_args()
    folder = Path(tempfile.gettempdir()) / "blocklens-docs-atlas-images"
    folder.mkdir(exist_ok=True)
    if len(list(folder.glob("*.jpg"))) != 96:
        make_images(folder, 96)
    model = bl.load_model("efficientnet_lite0")
    t = time.time()
    idx = bl.build_index(folder, model, [args.layer], store=args.store, samples=8, log=print)
    print(f"index {idx.key}: {time.time() - t:.1f} s")
    t = time.time()
    atlas = bl.activation_atlas(model, args.layer, idx, grid=args.grid, min_points=4, store=args.store, size=80,
                                steps=192, progress=True)
    print(f"atlas: {len(atlas.cells)} cells of {args.grid}x{args.grid} from {atlas.points} samples, {time.time() - t:.1f} s")
    out = HERE / f"atlas_{args.layer}.png"
    atlas.to_pil(80).save(out)
    print(out)
    for c in sorted(atlas.cells, key=lambda c: -c.count)[:8]:
        print(f"  cell ({c.row},{c.col}) {c.count:3d} samples: "
              + ", ".join(f"{lab} {ev:+.3f}" for _, lab, ev in c.classes[:3]))
    if args.units:
        from PIL import Image, ImageDraw

        units = [int(u) for u in args.units.split(",")]
        icons = bl.icons(model, args.layer, units, store=args.store, size=80, steps=192)
        px, k = 80, 6
        sheet = Image.new("RGB", ((1 + 2 * k) * (px + 4) + 24, len(units) * (px + 4) + 18), "white")
        draw = ImageDraw.Draw(sheet)
        draw.text((2, 2), f"{args.layer}: icon | top {k} patches | bottom {k} patches (96 images)", fill="black")
        for r, (u, icon) in enumerate(zip(units, icons)):
            ex = bl.dataset_examples(model, args.layer, u, idx, k=k)
            y = 16 + r * (px + 4)
            sheet.paste(icon.to_pil().convert("RGB").resize((px, px)), (0, y))
            for j, e in enumerate(ex.top + ex.bottom):
                x = (1 + j) * (px + 4) + (12 if j >= k else 6)
                sheet.paste(Image.fromarray(e.patch).resize((px, px), Image.BILINEAR), (x, y))
        out = HERE / f"examples_{args.layer}.png"
        sheet.save(out)
        print(out)
    if args.html or args.screenshot:
        page_path = Path(args.html or Path(tempfile.mkdtemp()) / "atlas.html")
        print(atlas.save_html(page_path))
    if args.screenshot:
        from playwright.sync_api import sync_playwright

        big = max(atlas.cells, key=lambda c: c.count)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector("#blocklens[data-ready]")
            page.locator(f'.atlas-cell[data-row="{big.row}"][data-col="{big.col}"]').hover()
            page.locator("#atlas").screenshot(path=str(HERE / "ui_atlas.png"))
            browser.close()
        print(HERE / "ui_atlas.png")


if __name__ == "__main__":
    main()
