"""The atlas page and dataset examples in a real browser (chromium via Playwright, as tests/test_browser.py)."""
import pytest
from playwright.sync_api import expect

import blocklens as bl
from test_browser import browser_context_args, browser_type_launch_args, console, pytestmark, shot  # noqa: F401 (fixtures, marks)
from test_index import make_folder

pytest.importorskip("umap")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("photos"), copies=1)


@pytest.fixture(scope="module")
def atlas_page(photos, lite0, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas")
    store = bl.IconStore(out / "store")
    idx = bl.build_index(photos, lite0, ["blocks.11"], store=store, samples=12, classes=3, progress=False)
    atlas = bl.activation_atlas(lite0, "blocks.11", idx, grid=6, min_points=3, store=store, progress=False,
                                size=32, steps=4)
    return atlas, atlas.save_html(out / "atlas.html")


def test_atlas_hover_shows_class_evidence_and_examples(page, console, atlas_page):
    atlas, path = atlas_page
    page.goto(path.as_uri())
    root = page.locator("#blocklens")
    expect(root).to_have_attribute("data-ready", "1")
    cells = page.locator(".atlas-cell")
    expect(cells).to_have_count(len(atlas.cells))
    big = max(atlas.cells, key=lambda c: c.count)
    cell = page.locator(f'.atlas-cell[data-row="{big.row}"][data-col="{big.col}"]')
    cell.hover()
    info = page.get_by_test_id("atlas-info")
    expect(info).to_contain_text(f"{big.count} samples")
    expect(info.locator(".atlas-class").first).to_contain_text(big.classes[0][1])
    expect(info.locator(".atlas-class")).to_have_count(len(big.classes))
    expect(info.locator(".ex img")).to_have_count(min(6, big.count))
    board = page.locator(".atlas-board")
    page.get_by_title("zoom in").click()
    expect(board).to_have_attribute("data-zoom", "1.25")
    page.locator(".atlas-holder").hover()
    page.mouse.wheel(0, -100)
    expect(board).to_have_attribute("data-zoom", "1.44")
    shot(page.locator("#atlas"), "atlas")


def test_report_icon_hover_shows_its_dataset_examples(page, console, tiny_explanation, photos, lite0, tmp_path):
    from blocklens.dataset.examples import examples_data

    expl, store = tiny_explanation
    idx = bl.build_index(photos, lite0, [lr.layer for lr in expl.layers], store=tmp_path / "ix", k=5, classes=0,
                         progress=False)  # not in the app's store: the other app tests expect no index there
    examples = examples_data(lite0, expl, idx, k=5)
    assert examples
    path = expl.save_html(tmp_path / "report.html", examples=examples)
    page.goto(path.as_uri())
    expect(page.locator("#blocklens")).to_have_attribute("data-ready", "1")
    key, ex = next(iter(examples.items()))
    icon = page.locator(f'img.icon[data-icon="{key}"]').first
    icon.scroll_into_view_if_needed()
    icon.hover()
    tip = page.get_by_test_id("examples-tip")
    expect(tip).to_be_visible()
    expect(tip).to_have_attribute("data-unit", f"{ex['layer']}:{ex['unit']}")
    expect(tip.locator(".ex-row").first.locator("img")).to_have_count(5)
    first = tip.locator(".ex-row").first.locator("img").first
    expect(first).to_have_attribute("alt", ex["top"][0]["path"])
    if ex["bottom"]:
        expect(tip.locator(".ex-row")).to_have_count(2)
    shot(tip, "icon_examples")
    # a click pins it: moving away keeps it, Escape closes it
    icon.click()
    page.mouse.move(5, 5)
    expect(tip).to_be_visible()
    page.keyboard.press("Escape")
    expect(tip).to_be_hidden()


@pytest.fixture
def app_index(live_server, photos, lite0):
    """An index of the photos in the live app's store, removed afterwards (the other app tests expect none)."""
    import shutil

    idx = bl.build_index(photos, lite0, ["blocks.7", "blocks.11"], store=live_server.store, k=4, samples=12,
                         classes=2, progress=False)
    yield idx
    shutil.rmtree(idx.store.root / "index", ignore_errors=True)


def test_app_icon_examples_and_atlas(page, console, live_server, app_index, lite0):
    import httpx

    assert [i["key"] for i in httpx.get(live_server.url + "/api/indexes").json()] == [app_index.key]
    page.goto(live_server.url)
    page.wait_for_selector("#blocklens[data-ready]")
    expect(page.locator("#atlases")).to_be_visible(timeout=30000)
    icon = page.locator('#blocklens img.icon.has-examples').first
    icon.scroll_into_view_if_needed()
    icon.hover()
    tip = page.get_by_test_id("examples-tip")
    expect(tip).to_be_visible(timeout=30000)
    expect(tip.locator(".ex-row").first.locator("img")).to_have_count(4)
    layer, unit = tip.get_attribute("data-unit").rsplit(":", 1)
    want = bl.dataset_examples(lite0, layer, int(unit), app_index, k=4)
    expect(tip.locator(".ex-row").first.locator("img").first).to_have_attribute("alt", want.top[0].path)
    page.mouse.move(5, 5)
    page.locator('button[data-atlas$=":blocks.11"]').click()
    expect(page.locator("#atlases .atlas-cell").first).to_be_visible(timeout=120000)
    page.locator("#atlases .atlas-cell").first.hover()
    expect(page.locator("#atlases [data-testid=atlas-info] .atlas-class").first).to_be_visible()
    shot(page.locator("#atlases"), "app-atlas")
