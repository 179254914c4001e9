"""Regenerate the interface screenshots in docs/ (the README shows them).

Run: .venv/bin/python docs/screenshots.py [--image dog] [--preset quick]
Explains the photo (icons from the store, rendered where missing), writes the report, opens it in Debian's
chromium and saves one picture per view, each in a hovered state, and the groups, classes and spatial views
before any hover (faithful_*.png: the line each view gives on how its numbers were computed and checked).
Also ui_concepts.png: the class concepts report of the planted shortcut (tests/planted.py: a two-class head over
Lite0 where only "marked" photos carry a mark), its top concept opened; ``--only concepts`` makes just that one.
And ui_atoms.png: a concept dictionary of Lite0 (32 atoms at blocks.11) over the same 48 photos, searched for a
class and its top atom opened; ``--only atoms`` makes just that one (``--store`` reuses a store's shards and icons).
And explain_atoms.png: an explanation read in that dictionary's atoms (``explain --dictionary``: the atoms at each
position, attribution to atoms with the residual, the removal check), one atom hovered; ``--only explain-atoms``
makes just that one (``--dictionary KEY`` takes a dictionary of the store instead, ``--atoms-image`` the photo).
"""
import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

import blocklens as bl

DOCS = Path(__file__).resolve().parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def hover_cell(page, overlay, x, y, h, w):
    overlay.scroll_into_view_if_needed()
    box = overlay.bounding_box()
    page.mouse.move(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h)


def start_app(preset):
    """The web app on a free port of 127.0.0.1 in a thread; returns (url, stop)."""
    import socket
    import threading
    import time

    import uvicorn

    from blocklens.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(preset=preset), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}/", stop


def concepts_report(preset, store=None):
    """The class concepts of the planted shortcut ("marked" vs "plain", 24 photos a class) as a report."""
    import sys

    sys.path.insert(0, str(DOCS.parent / "tests"))
    import planted
    from blocklens.dataset.concepts import class_concepts

    work = Path(tempfile.gettempdir()) / "blocklens-docs-concepts"
    root = planted.make_folder(work / "photos", 24)
    model = planted.train_head(bl.load_model("efficientnet_lite0"), root)
    r = class_concepts(model, root, "marked", layer="blocks.11", vs="plain", store=store or work / "store",
                       preset=preset, progress=True)
    print("\n".join(r.summary()))
    return r.save_html(work / "concepts.html")


def shoot_concepts(browser, preset):
    page = browser.new_page(viewport={"width": 1240, "height": 900}, device_scale_factor=1)
    page.goto(concepts_report(preset).as_uri())
    page.wait_for_selector("#blocklens[data-ready]")
    page.locator("[data-testid=concept-card]").first.click()
    page.locator("#concepts").screenshot(path=str(DOCS / "ui_concepts.png"))
    page.close()


def dictionary_report(preset, store=None):
    """A concept dictionary of Lite0 over the planted folder (24 photos a class, no labels used) as a report."""
    import sys

    sys.path.insert(0, str(DOCS.parent / "tests"))
    import planted

    work = Path(tempfile.gettempdir()) / "blocklens-docs-dictionary"
    root = planted.make_folder(work / "photos", 24)
    d = bl.concept_dictionary(bl.load_model("efficientnet_lite0"), root, store=store or work / "store", preset=preset,
                              progress=True)
    print("\n".join(d.summary()[:3]))
    return d.save_html(work / "dictionary.html")


def shoot_atoms(browser, preset, store=None, search="zebra"):
    page = browser.new_page(viewport={"width": 1240, "height": 900}, device_scale_factor=1)
    page.goto(dictionary_report(preset, store).as_uri())
    page.wait_for_selector("#blocklens[data-ready]")
    page.get_by_test_id("atoms-search").fill(search)
    page.get_by_test_id("atom-card").first.click()
    page.wait_for_timeout(500)
    box = "e => { const r = e.getBoundingClientRect(); return [r.left, r.top + window.scrollY, r.width, r.bottom + window.scrollY]; }"
    x, y, w, _ = page.locator("#atoms").evaluate(box)
    bottom = page.get_by_test_id("atom-panel").evaluate(box)[3]
    page.screenshot(path=str(DOCS / "ui_atoms.png"), full_page=True, clip={"x": x, "y": y, "width": w, "height": bottom + 16 - y})
    page.close()


def shoot_explain_atoms(browser, preset, store=None, key=None, image="collies", cls=0):
    """The explanation of ``image`` with a Lite0 dictionary (``key`` in ``store``, else the planted folder's of
    :func:`dictionary_report`): only its atoms section, one layer, icons from the store."""
    work = Path(tempfile.gettempdir()) / "blocklens-docs-dictionary"
    store = store or work / "store"
    if key is None:
        dictionary_report(preset, store)
        from blocklens.dataset.dictionary import list_dictionaries
        key = list_dictionaries(store)[0]["key"]
    e = bl.explain(bl.bundled_image(image), layers=["blocks.11"], group_counts=[6], icons="cached", grids=False,
                   store=store, dictionary=key, preset=preset)
    report = e.save_html(Path(tempfile.mkdtemp()) / "atoms.html")
    page = browser.new_page(viewport={"width": 1240, "height": 900}, device_scale_factor=1)
    page.goto(report.as_uri())
    page.wait_for_selector("#blocklens[data-ready]")
    a = e.atoms
    best = a.ranked(a.classes[cls])[0][0]
    page.locator("#atoms .tabs .tab").nth(cls).click()
    page.locator(f"#atoms .ax-bars [data-atom='{best}']").hover()
    page.wait_for_timeout(300)
    page.locator("#atoms").screenshot(path=str(DOCS / "explain_atoms.png"))
    page.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="dog")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--only", choices=["concepts", "atoms", "explain-atoms"], help="make only this screenshot")
    ap.add_argument("--dictionary", default=None, help="explain_atoms.png: a dictionary key of --store")
    ap.add_argument("--atoms-image", default="collies", help="explain_atoms.png: the bundled photo explained")
    ap.add_argument("--store", default=None, help="the dictionary's store (ui_atoms.png; default: a temporary one)")
    args = ap.parse_args()
    if args.only == "atoms":
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            shoot_atoms(browser, args.preset, args.store)
            browser.close()
        print("wrote ui_atoms.png")
        return
    if args.only == "explain-atoms":
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            shoot_explain_atoms(browser, args.preset, args.store, args.dictionary, args.atoms_image)
            browser.close()
        print("wrote explain_atoms.png")
        return
    if args.only == "concepts":
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            shoot_concepts(browser, args.preset)
            browser.close()
        print("wrote ui_concepts.png")
        return
    e = bl.explain(bl.bundled_image(args.image), preset=args.preset)
    print(e, {k: round(v, 1) for k, v in e.timings.items()})
    report = Path(tempfile.mkdtemp()) / "report.html"
    e.save_html(report)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1240, "height": 900}, device_scale_factor=1)
        page.goto(report.as_uri())
        page.wait_for_selector("#blocklens[data-ready]")
        page.locator("#summary").screenshot(path=str(DOCS / "ui_summary.png"))
        # what the views say about their own numbers (docs/faithfulness.md), before any hover
        for view in ("groups", "classes", "spatial"):
            page.locator(f"#{view}").screenshot(path=str(DOCS / f"faithful_{view}.png"))

        cards = page.locator("#classes .chan-col").first.locator(".chan")
        cards.nth(0).hover()
        page.locator("#classes").screenshot(path=str(DOCS / "ui_classes.png"))

        L = e.layers[0]
        h, w = L.shape[1:]
        hover_cell(page, page.locator("#dictionary .overlay"), 4, 8, h, w)
        page.locator("#dictionary").screenshot(path=str(DOCS / "ui_dictionary.png"))

        page.locator("#grids .grid-mag").check()
        page.locator("#grids").screenshot(path=str(DOCS / "ui_grids.png"))

        L2 = e.layers[1]
        hover_cell(page, page.locator("#spatial .overlay").nth(1), 2, 4, *L2.shape[1:])
        page.locator("#spatial").screenshot(path=str(DOCS / "ui_spatial.png"))

        page.locator("#groups .group-layer").nth(1).locator(".group-card").nth(0).hover()
        page.locator("#groups").screenshot(path=str(DOCS / "ui_groups.png"))

        # the app: its controls above the same views
        url, stop = start_app(args.preset)
        try:
            page.goto(url)
            page.wait_for_selector("#blocklens[data-ready]")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(DOCS / "ui_app.png"))
        finally:
            stop()
        shoot_concepts(browser, args.preset)
        shoot_atoms(browser, args.preset, args.store)
        shoot_explain_atoms(browser, args.preset, args.store, args.dictionary, args.atoms_image)
        browser.close()
    print("wrote", ", ".join(sorted(p.name for p in [*DOCS.glob("ui_*.png"), *DOCS.glob("faithful_*.png")])))


if __name__ == "__main__":
    main()
