"""The class concepts page in a real browser (chromium via Playwright, as tests/test_browser.py): the self-contained
report from file:// with the network off, and the app's "Class concepts" page computing them over an index.

One result per module: the planted-shortcut model (tests/planted.py: only "marked" images carry a mark) over 16
images a class, tiny icons; the app reuses its store, so its job finds the shards and icons cached."""
import re
import time
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect

import blocklens as bl
import planted
from conftest import serve_app
from test_browser import browser_context_args, browser_type_launch_args, console, example_maps_shown, pytestmark, shot  # noqa: F401 (fixtures, marks)

ICONS = dict(size=32, steps=2)  # with the quick preset's other settings: the app's recipe below is the same


@pytest.fixture(scope="module")
def planted_concepts(lite0, tmp_path_factory):
    from blocklens.dataset.concepts import class_concepts

    out = tmp_path_factory.mktemp("concepts")
    root = planted.make_folder(out / "photos", 16)
    model = planted.train_head(lite0, root)
    store = bl.IconStore(out / "store")
    t0 = time.perf_counter()
    result = class_concepts(model, root, "marked", layer="blocks.11", vs="plain", store=store, preset="quick",
                            progress=False, **ICONS)
    print(f"class_concepts: {time.perf_counter() - t0:.1f} s, k={result.k}")
    return SimpleNamespace(model=model, root=root, store=store, result=result, doc=result.to_json(),
                           path=result.save_html(out / "report.html"))


def test_concepts_report_from_file_with_the_network_off(page, console, planted_concepts):
    r, doc = planted_concepts.result, planted_concepts.doc
    outside = []
    page.context.set_offline(True)
    page.route(re.compile(r"^(?!file:|data:).*"), lambda route: (outside.append(route.request.url), route.abort()))
    page.goto(planted_concepts.path.as_uri())
    expect(page.locator("#blocklens")).to_have_attribute("data-ready", "1")
    header = page.locator("#concepts .cc-header")
    expect(header).to_contain_text("Concepts of marked · blocks.11")
    expect(header).to_contain_text(r.model)
    expect(page.get_by_test_id("concepts-source")).to_contain_text("labels from folders")
    expect(page.get_by_test_id("concepts-method")).to_have_text(r.method)
    expect(header).to_contain_text(f"k = {r.k}")
    expect(page.locator(".cc-ktable tbody tr")).to_have_count(len(r.k_selection))

    # one card per concept, in rank order, each with its icon, numbers, location map, flags as written, patches
    cards = page.get_by_test_id("concept-card")
    expect(cards).to_have_count(len(r.concepts))
    assert [int(i) for i in cards.evaluate_all("els => els.map(e => e.dataset.index)")] == [c.index for c in r.concepts]
    for n, c in enumerate(doc["concepts"]):
        card = cards.nth(n)
        expect(card.locator("img.icon")).to_have_attribute("src", doc["icons"][c["key"]])
        expect(card).to_contain_text(f"{c['flipped']} of {c['predicted']}")
        expect(card.locator(".cc-flag")).to_have_count(len(c["flags"]))
        for f in c["flags"]:
            expect(card.locator(f'.cc-flag[data-code="{f["code"]}"]')).to_contain_text(f["text"])
        expect(card.locator(".cc-loc .cc-heat")).to_have_count(sum(v > 0 for row in c["location"]["heat"] for v in row))
        expect(card.locator(".cc-patch")).to_have_count(len(c["examples"]))
        first = c["examples"][0]
        title = card.locator(".cc-patch").first.get_attribute("title")
        assert title.startswith(f"{first['path']} @ ({first['x']},{first['y']}): ")
    widths = cards.locator(".cc-bar .bar-fill").evaluate_all("els => els.map(e => e.getBoundingClientRect().width)")
    assert widths[0] == max(widths) and widths[0] > 100
    if len(widths) > 1:
        assert widths[-1] <= widths[0]
    top = doc["concepts"][0]
    expect(cards.first.locator(".cc-imp")).to_contain_text(f"{top['importance']:.3f} ± {top['importance_sd']:.3f} (log-prob")

    # a click opens the images where the concept fires most, each with its map on a canvas and its box
    cards.first.click()
    panel = page.get_by_test_id("concept-panel")
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("data-index", str(top["index"]))
    shown = list(dict.fromkeys(e["image"] for e in top["examples"]))
    example_maps_shown(panel, shown, doc["crops"])
    shot(page.locator("#concepts"), "concepts")
    page.get_by_test_id("concept-close").click()
    expect(panel).to_be_hidden()

    # the pair's vocabulary: both sides, each channel with its icon, evidence and patches
    voc = doc["vocabulary"]
    section = page.locator("#concepts-vocabulary")
    expect(section.locator("h2")).to_have_text("marked vs plain across the folder")
    for side in ("for", "against"):
        chans = [c for c in voc["channels"] if c["side"] == side]
        rows = section.locator(f'.cc-side[data-side="{side}"] .cc-chan')
        expect(rows).to_have_count(len(chans))
        assert [int(i) for i in rows.evaluate_all("els => els.map(e => e.dataset.channel)")] == [c["channel"] for c in chans]
        expect(rows.first.locator("img.icon")).to_have_attribute("src", chans[0]["icon"])
        expect(rows.first.locator(".cc-patch")).to_have_count(len(chans[0]["examples"]))
    expect(section.locator('.cc-side[data-side="against"] h3')).to_have_text("for plain")
    shot(section, "concepts-vocabulary")
    assert not outside, outside


@pytest.fixture(scope="module")
def concepts_app(planted_concepts):
    """The app on a free port over the planted result's store, with an index of its folder; the planted model is
    served under its name (it has no spec to load from)."""
    from blocklens.app import BlocklensApp

    model, store = planted_concepts.model, planted_concepts.store
    idx = bl.build_index(planted_concepts.root, model, ["blocks.7", "blocks.11"], store=store, k=4, samples=4,
                         classes=0, progress=False)
    state = BlocklensApp(store=store, preset="quick", icon_recipe=ICONS, grid_recipe=dict(cell=32, steps=2))
    state.specs[model.name] = None
    for role in ("analysis", "render", "concepts"):
        state._models[(model.name, role)] = model
    with serve_app(state) as url:
        yield SimpleNamespace(url=url, state=state, index=idx)


def test_app_concepts_page_computes_and_shows_the_concepts(page, console, concepts_app, planted_concepts):
    r = planted_concepts.result
    page.goto(concepts_app.url + "/#concepts")
    expect(page.locator("#concepts-page")).to_be_visible()
    expect(page.locator("#blocklens")).to_be_hidden()  # the explain views are another page
    index = page.locator("#cc-index")
    expect(index.locator("option")).to_have_count(1)
    expect(index).to_have_value(concepts_app.index.key)
    expect(page.locator("#cc-layer")).to_have_value("blocks.11")
    expect(page.locator("#cc-note")).to_contain_text("labels from folders")
    assert page.locator("#cc-labels option").evaluate_all("els => els.map(e => e.value)") == ["marked", "plain"]

    # a misspelt class: the server's 400 and its closest names, shown in the page
    page.locator("#cc-class").fill("markd")
    page.locator("#cc-go").click()
    expect(page.locator("#cc-error")).to_contain_text("unknown class 'markd'")
    expect(page.locator("#cc-error")).to_contain_text("marked")
    # the server answered 400, which the browser logs as a failed resource; nothing else may be logged
    console[:] = [e for e in console if "status of 400" not in e]

    page.locator("#cc-class").fill("marked")
    page.locator("#cc-vs").fill("plain")
    page.locator("#cc-go").click()
    result = page.locator("#concepts-result")
    expect(result).to_have_attribute("data-ready", "1", timeout=180000)
    expect(page.locator("#cc-error")).to_be_empty()
    expect(page.locator("#cc-status-text")).to_contain_text(f"{len(r.concepts)} concepts of marked at blocks.11")
    cards = result.get_by_test_id("concept-card")
    expect(cards).to_have_count(len(r.concepts))  # the same numbers as the library's result (shards cached)
    assert [int(i) for i in cards.evaluate_all("els => els.map(e => e.dataset.index)")] == [c.index for c in r.concepts]
    expect(result.locator("#concepts-vocabulary h2")).to_have_text("marked vs plain across the folder")
    cards.first.click()
    expect(result.get_by_test_id("concept-panel").locator("canvas.cc-map").first).to_be_visible()
    shot(page.locator("#concepts-page"), "app-concepts-form")

    # the explain page is one link away (not followed here: it would explain and render with the planted model)
    expect(page.locator('#app-nav a[data-page="explain"]')).to_have_attribute("href", "#")
