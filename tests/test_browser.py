"""The pages in a real browser: Debian's chromium driven by Playwright (pytest-playwright's ``page`` fixture).

They hover, click and drag as a reader would and check what the page shows against the page document; they
fail on any console error. Screenshots of each view go to ``test-artifacts/screenshots/``.
"""
import json
import os
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

import blocklens as bl

CHROMIUM = os.environ.get("BLOCKLENS_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).exists() and os.environ.get("BLOCKLENS_REQUIRE_BROWSER"):
    raise RuntimeError(f"BLOCKLENS_REQUIRE_BROWSER is set but there is no chromium at {CHROMIUM}")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM} (.ci/run installs it: "
                                 "apt-get install chromium)")]
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def console(page):
    """Every console error and uncaught exception of the page; the test fails if there are any."""
    errors = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    yield errors
    assert not errors, errors


def shot(locator, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=str(SHOTS / f"{name}.png"))


def example_maps_shown(panel, shown: list, crops: dict) -> None:
    """A concept's or atom's panel draws one map per image in ``shown``, in that order, over that image's crop, each
    with its heat layer and box painted."""
    maps = panel.locator("canvas.cc-map")
    expect(maps).to_have_count(len(shown))
    assert [int(i) for i in maps.evaluate_all("els => els.map(e => e.dataset.image)")] == shown
    expect(panel.locator(".cc-shot img").first).to_have_attribute("src", crops[str(shown[0])])
    painted = maps.first.evaluate("c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                                  " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n / (d.length / 4); }")
    assert painted > 0.05, painted  # the heat layer and the box are drawn


def hover_cell(page, overlay, x, y, grid):
    overlay.scroll_into_view_if_needed()
    box = overlay.bounding_box()
    h, w = grid
    page.mouse.move(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h)


def api_requests(page):
    seen = []
    page.on("request", lambda r: seen.append(r.url) if r.resource_type in ("fetch", "xhr") else None)
    return seen


def channels_of(locator):
    return [int(c) for c in locator.evaluate_all("els => els.map(e => e.dataset.channel)")]


def check_views(page, doc, prefix):
    """Hover, switch and slide through every view; ``doc`` is the page document the page shows."""
    L7 = doc["layers"][0]
    # semantic dictionary: the panel follows the hovered cell and lists that cell's top channels
    dict_overlay = page.locator("#dictionary .overlay")
    for x, y in [(2, 3), (9, 11)]:
        hover_cell(page, dict_overlay, x, y, L7["shape"][1:])
        side = page.locator("#dictionary .dict-side")
        assert side.get_attribute("data-cell") == f"{x},{y}"
        assert channels_of(side.locator(".dict-entry")) == L7["dictionary"]["channels"][y][x]
        assert page.locator("#dictionary .dict-float").is_visible()
    shot(page.locator("#dictionary"), f"{prefix}dictionary")

    # classes: switching the pair changes the channel list, to the top channels of the new difference
    def expected(a, b, sign):
        d = np.array(L7["attribution"][str(a)]) - np.array(L7["attribution"][str(b)])
        order = np.argsort(-sign * d, kind="stable")
        return [int(c) for c in order[:8] if sign * d[c] > 0]

    cols = page.locator("#classes .chan-col")
    a, b = doc["pair"]
    first = channels_of(cols.nth(0).locator(".chan"))
    assert first == expected(a, b, 1)
    third = doc["classes"][2]
    page.locator("#classes select.class-pick").nth(1).select_option(str(third))
    second = channels_of(cols.nth(0).locator(".chan"))
    assert second == expected(a, third, 1) and second != first
    assert channels_of(cols.nth(1).locator(".chan")) == expected(a, third, -1)
    # hovering a channel paints where it fires
    canvas = page.locator("#classes .ov-canvas")
    before = canvas.evaluate("c => c.toDataURL()")
    cols.nth(0).locator(".chan").first.hover()
    assert canvas.evaluate("c => c.toDataURL()") != before
    assert "fires here" in page.locator("#classes .caption").inner_text()
    shot(page.locator("#classes"), f"{prefix}classes")

    # activation grids: one zoom for all, and the magnitude toggle repaints
    grids = page.locator("#grids .grid-canvas")
    assert grids.count() == len(doc["layers"])
    page.locator("#grids .grid-zoom").fill("2")
    sizes = grids.evaluate_all("cs => cs.map(c => c.style.width)")
    assert sizes == ["600px"] * len(doc["layers"])
    before = grids.first.evaluate("c => c.toDataURL()")
    page.locator("#grids .grid-mag").check()
    assert grids.first.evaluate("c => c.toDataURL()") != before
    page.locator("#grids .grid-zoom").fill("1")
    shot(page.locator("#grids"), f"{prefix}grids")

    # spatial attribution: hover a later-layer position; the panel shows its class attributions
    L11 = doc["layers"][1]
    sp = page.locator("#spatial .overlay")
    hover_cell(page, sp.nth(1), 3, 2, L11["shape"][1:])
    panel = page.locator("#spatial .spatial-panel")
    assert panel.get_attribute("data-cell") == "1:3,2"
    assert panel.locator(".cls-row").count() == len(doc["classes"])
    assert "influences blocks.11 at (3, 2)" in page.locator("#spatial .caption").first.inner_text()
    shot(page.locator("#spatial"), f"{prefix}spatial")

    # neuron groups: the slider changes the groups; hovering one isolates it
    groups = page.locator("#groups")
    counts = L7["groups"]["counts"]
    page.locator("#groups .groups-k").fill(str(0))
    assert groups.get_attribute("data-k") == str(counts[0])
    assert groups.locator(".group-layer").first.locator(".group-card").count() == counts[0]
    page.locator("#groups .groups-k").fill(str(len(counts) - 1))
    assert groups.get_attribute("data-k") == str(counts[-1])
    assert groups.locator(".group-layer").first.locator(".group-card").count() == counts[-1]
    assert groups.locator(".sankey-svg .node").count() == 2 * counts[-1] + len(doc["classes"])
    # every link the page document holds is drawn, negative ones dashed; the predicted class gets positive flow
    last = doc["layers"][-1]["groups"]["options"][str(counts[-1])]["attribution"]
    top = doc["classes"][0]
    if max(row[0] for row in last) > 0:
        assert groups.locator(f'.sankey-svg .link[data-dst="class:{top}"][data-sign="+"]').count() > 0
    else:  # no positive evidence: the view says so in words
        assert doc["labels"][str(top)] in groups.locator(".sankey-note").inner_text()
    assert groups.locator('.sankey-svg .link.neg[data-sign="-"]').count() > 0
    # each view says how its numbers were computed and how faithful they measured on this image
    for view, sel in (("groups", "#groups"), ("channels", "#classes"), ("spatial", "#spatial")):
        lines = page.locator(f'{sel} .method-line[data-view="{view}"]').all_inner_texts()
        assert lines and all("Faithfulness on this image" in t for t in lines), (view, lines)
    # the icons' quality figures are shown beside them: a line per layer, and each icon's own in its tooltip
    if doc.get("icon_quality"):
        for L in doc["layers"]:
            line = page.locator(f'#summary .quality-line[data-layer="{L["layer"]}"]')
            assert L["quality_line"] in line.inner_text()
        key, fig = next((k, v) for k, v in doc["icon_quality"].items() if not v["dead"])
        title = page.locator(f'#classes img.icon[data-icon="{key}"], #dictionary img.icon[data-icon="{key}"]').first
        if title.count():
            t = title.get_attribute("title")
            assert ("not specific" in t) != fig["specific"] and f"contrast {fig['contrast']:.2f}" in t, t
        assert doc["note"] in page.locator("#summary .quality-line.recipe").inner_text()
    groups.locator(".group-layer").nth(1).locator(".group-card").nth(1).hover()
    assert groups.get_attribute("data-isolated") == "1:1"
    assert groups.locator(".group-card.dim").count() == 2 * counts[-1] - 1
    shot(groups, f"{prefix}groups")


def test_app_views_answer_hovers_in_the_page(page, console, live_server):
    doc = httpx.post(live_server.url + "/api/explain", params={"image": "dog"}, timeout=120).json()
    page.goto(live_server.url)
    page.wait_for_selector("#blocklens[data-ready]")
    expect(page.locator("#status-text")).to_have_text(re.compile("^ready"))
    shot(page.locator("body"), "app-top")
    requests = api_requests(page)
    check_views(page, doc, "app-")
    assert requests == [], f"hovers went to the server: {requests}"
    assert page.locator("img.icon.pending").count() == 0


def test_app_upload_gets_its_views(page, console, live_server, tmp_path):
    page.goto(live_server.url)
    page.wait_for_selector("#blocklens[data-ready]")
    path = tmp_path / "cat.png"
    Image.open(bl.bundled_image("chelsea")).save(path)
    page.locator("#upload").set_input_files(str(path))
    expect(page.locator("#summary .pred-label").first).to_have_text("tiger cat", timeout=60000)
    # the icons this image needs render in the background, with progress, and fill in
    try:  # a picture of the page while it renders, when we catch it (tiny recipes finish in seconds)
        expect(page.locator("#status-text")).to_contain_text("rendering", timeout=5000)
        shot(page.locator("body"), "app-rendering")
        # placeholders are a blank pixel with no alt text: no broken-image glyphs while icons are on their way
        assert page.locator("img.icon.pending").evaluate_all(
            "imgs => imgs.every(i => i.alt === '' && i.src.startsWith('data:image/gif'))")
    except AssertionError:
        pass
    expect(page.locator("#status-text")).to_have_text(re.compile("^ready"), timeout=120000)
    assert page.locator("img.icon.pending").count() == 0
    assert page.locator("#grids .grid-canvas").count() == 2
    shot(page.locator("body"), "app-upload")


def test_app_shows_a_bad_upload_as_an_error(page, console, live_server, tmp_path):
    page.goto(live_server.url)
    page.wait_for_selector("#blocklens[data-ready]")
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    page.locator("#upload").set_input_files(str(bad))
    expect(page.locator("#error")).to_contain_text("upload")
    # the server answered 400, which the browser logs as a failed resource; nothing else may be logged
    console[:] = [e for e in console if "status of 400" not in e]


def test_report_works_from_file_with_the_network_off(page, console, tiny_explanation, tmp_path):
    e, _ = tiny_explanation
    path = e.save_html(tmp_path / "report.html")
    outside = []
    page.context.set_offline(True)
    page.route(re.compile(r"^(?!file:|data:).*"), lambda route: (outside.append(route.request.url), route.abort()))
    page.goto(path.as_uri())
    page.wait_for_selector("#blocklens[data-ready]")
    doc = json.loads(page.locator("#blocklens-data").text_content())
    check_views(page, doc, "report-")
    assert outside == []
    shot(page.locator("body"), "report")


def test_a_dead_unit_is_drawn_as_dead_never_as_a_grey_icon(page, console, tiny_explanation, tmp_path):
    import copy

    e, _ = tiny_explanation
    e = copy.copy(e)
    e.quality = copy.deepcopy(e.quality)
    layer = e.layers[0].layer
    key = next(iter(e.quality[layer]["icons"]))
    e.quality[layer]["icons"][key]["dead"] = True
    path = e.save_html(tmp_path / "dead.html")
    page.goto(path.as_uri())
    page.wait_for_selector("#blocklens[data-ready]")
    dead = page.locator(f'img.icon[data-icon="{key}"]')
    assert dead.count() > 0
    for i in range(dead.count()):
        img = dead.nth(i)
        assert "dead" in img.get_attribute("class") and img.get_attribute("src").startswith("data:image/svg+xml")
        assert "dead: no input moves this unit" in img.get_attribute("title")
    alive = page.locator(f'img.icon:not([data-icon="{key}"])').first
    assert "dead" not in alive.get_attribute("class")


def test_notebook_output_shows_the_views(page, console, tiny_explanation):
    e, _ = tiny_explanation
    page.set_content(f"<html><body><h3>In [1]: explanation</h3>{e._repr_html_()}</body></html>")
    frame = page.frame_locator("iframe.blocklens-frame")
    frame.locator("#blocklens[data-ready]").wait_for()
    assert frame.locator("#summary .pred-label").first.inner_text() == "malamute"
    assert frame.locator("#groups .group-card").count() > 0
    # the frame grows to fit its content (the outer script listens to the frame's height)
    expect(page.locator("iframe.blocklens-frame")).to_have_attribute("style", re.compile(r"height: ?\d{4}px"))


def test_report_cuts_icons_from_a_layer_sprite_sheet(page, console, lite0, tiny_explanation, tmp_path):
    import shutil

    from blocklens.recipes import recipe_for
    from blocklens.precompute import write_sprite
    from blocklens.store import IconStore
    from conftest import TINY_ICONS

    e, src = tiny_explanation
    shutil.copytree(src, tmp_path / "store")
    store = IconStore(tmp_path / "store")
    write_sprite(store, lite0, "blocks.7", recipe_for(**TINY_ICONS))
    path = e.save_html(tmp_path / "sprites.html", store=store)
    page.goto(path.as_uri())
    page.wait_for_selector("#blocklens[data-sprites='1']")
    assert page.locator("img.icon.pending").count() == 0
    first = page.locator("#classes .chan img.icon").first
    assert first.get_attribute("src").startswith("data:image/png")
    assert first.evaluate("img => img.complete && img.naturalWidth") == 32


def test_three_layers_middle_position_shows_both_directions(page, console, lite0, tmp_path):
    from conftest import TINY_GRID, TINY_ICONS

    e = bl.explain(bl.bundled_image("chelsea"), model=lite0, layers=["blocks.5", "blocks.9", "blocks.13"],
                   store=tmp_path / "store", progress=False, group_counts=[3], n_groups=3, icon_recipe=TINY_ICONS,
                   grid_recipe=TINY_GRID)
    page.goto(e.save_html(tmp_path / "three.html").as_uri())
    page.wait_for_selector("#blocklens[data-ready]")
    overlays = page.locator("#spatial .overlay")
    assert overlays.count() == 3
    hover_cell(page, overlays.nth(1), 5, 6, e.layers[1].shape[1:])
    captions = page.locator("#spatial .caption")
    assert captions.nth(0).inner_text() == "blocks.5: influences blocks.9 at (5, 6)"
    assert captions.nth(2).inner_text() == "blocks.13: influenced by blocks.9 at (5, 6)"
    # the flow diagram: three layers of groups, then the classes
    assert page.locator("#groups .sankey-svg .node").count() == 3 * 3 + 5
    labels = page.locator("#groups .sankey-svg .col-label").evaluate_all("ts => ts.map(t => t.textContent)")
    assert labels == ["blocks.5", "blocks.9", "blocks.13", "classes"]
    shot(page.locator("#spatial"), "three-layers-spatial")
