"""Screenshots of what the views say about their own numbers (docs/faithfulness.md shows them).

Run: .venv/bin/python docs/screenshot_faithfulness.py [--image dog] [--preset quick]
Explains the photo with the icons the store already holds (no rendering: the numbers are the point), writes the
report, opens it in Debian's chromium and saves the groups view (cards and Sankey), the classes view and the
spatial view, each with its method-and-faithfulness line.
"""
import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

import blocklens as bl
from screenshots import ARGS, DOCS  # noqa: E402 (docs/ is the script's folder)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="dog")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    e = bl.explain(bl.bundled_image(args.image), preset=args.preset, icons="cached", grids=False)
    print(e, {k: round(v, 1) for k, v in e.timings.items()})
    for lr in e.layers:
        print(lr.layer, lr.methods, *lr.faithfulness["lines"].values(), sep="\n  ")
    report = Path(tempfile.mkdtemp()) / "report.html"
    e.save_html(report)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1240, "height": 900}, device_scale_factor=1)
        page.goto(report.as_uri())
        page.wait_for_selector("#blocklens[data-ready]")
        page.locator("#groups").screenshot(path=str(DOCS / "faithful_groups.png"))
        page.locator("#classes").screenshot(path=str(DOCS / "faithful_classes.png"))
        page.locator("#spatial").screenshot(path=str(DOCS / "faithful_spatial.png"))
        browser.close()
    print("wrote faithful_groups.png, faithful_classes.png, faithful_spatial.png")


if __name__ == "__main__":
    main()
