"""The concept dictionary page in a real browser (chromium via Playwright, as tests/test_browser.py): the
self-contained report from file:// with the network off (the atoms, the quality beside its baselines, the class
search, an atom's images with its maps), and the app's "Concept dictionaries" page showing the saved one.

One dictionary per session (conftest ``small_dictionary``: Lite0 over 12 planted-folder photos, 6 atoms)."""
import re

import pytest
from playwright.sync_api import expect

from conftest import serve_app
from test_browser import browser_context_args, browser_type_launch_args, console, example_maps_shown, pytestmark, shot  # noqa: F401 (fixtures, marks)


def _cards(page):
    cards = page.get_by_test_id("atom-card")
    return cards, (lambda: [int(i) for i in cards.evaluate_all("els => els.map(e => e.dataset.index)")])


def _by_class(doc):
    """A class whose ranking of the atoms differs from the page's first order, and that ranking."""
    drops = doc["class_drops"]
    first = sorted(doc["atoms"], key=lambda a: -(a["drives"][0]["prob_drop"] if a["drives"] else float("-inf")))
    first = [a["index"] for a in first]
    for c, label in sorted(drops["labels"].items(), key=lambda kv: kv[1]):
        v = {a["index"]: drops["atoms"][str(a["index"])].get(c, 0.0) for a in doc["atoms"]}
        ranked = sorted(first, key=lambda i: -v[i])  # stable: ties keep the first order, as the page's sort does
        matching = [l for l in drops["labels"].values() if label.lower() in l.lower()]
        if ranked[0] != first[0] and len(matching) == 1:
            return label, ranked, first
    pytest.skip("no class reorders the atoms")


def test_dictionary_report_from_file_with_the_network_off(page, console, small_dictionary):
    d, doc = small_dictionary.result, small_dictionary.doc
    path = d.save_html(small_dictionary.out / "dictionary.html")
    outside = []
    page.context.set_offline(True)
    page.route(re.compile(r"^(?!file:|data:).*"), lambda route: (outside.append(route.request.url), route.abort()))
    page.goto(path.as_uri())
    expect(page.locator("#blocklens")).to_have_attribute("data-ready", "1")
    header = page.locator("#atoms .at-header")
    expect(header).to_contain_text(f"Concept dictionary · {d.layer} · {d.model}")
    expect(page.get_by_test_id("atoms-source")).to_contain_text("6 atoms (NMF)")
    quality = page.get_by_test_id("atoms-quality")
    expect(quality).to_contain_text(f"{round(100 * d.quality['explained_variance'])}%")
    expect(quality).to_contain_text(f"{round(100 * d.quality['pca']['explained_variance'])}%")
    expect(quality.locator("thead")).to_contain_text("PCA, 6 components")

    # one card per atom, strongest top drive first, each with its icon, drives, flags as written, patches
    cards, order = _cards(page)
    expect(cards).to_have_count(6)
    label, ranked, first = _by_class(doc)
    assert order() == first
    for a in doc["atoms"]:
        card = page.locator(f'[data-testid=atom-card][data-index="{a["index"]}"]')
        expect(card.locator("img.icon")).to_have_attribute("src", doc["icons"][a["key"]])
        expect(card.locator(".at-drive")).to_have_count(min(3, len(a["drives"])))
        if a["drives"]:
            expect(card.locator(".at-drive").first.locator(".at-cls")).to_have_text(a["drives"][0]["label"])
        expect(card.locator(".cc-flag")).to_have_count(len(a["flags"]))
        for f in a["flags"]:
            expect(card.locator(f'.cc-flag[data-code="{f["code"]}"]')).to_contain_text(f["text"])
            expect(card.locator(f'.at-chip[data-code="{f["code"]}"]')).to_be_visible()
        expect(card.locator(".cc-patch img")).to_have_count(len(a["examples"]))

    # a class typed in the search ranks the atoms by that class's drop, and each card says it
    page.get_by_test_id("atoms-search").fill(label)
    expect(page.get_by_test_id("atoms-search-note")).to_contain_text(f"p({label})")
    expect(cards.first).to_have_attribute("data-index", str(ranked[0]))
    assert order() == ranked
    expect(cards.first.locator(".at-search-line")).to_contain_text(f"{label}: p drop")
    page.get_by_test_id("atoms-search").fill("no such class")
    expect(page.get_by_test_id("atoms-search-note")).to_contain_text("no atom moves the probability")
    expect(cards.first).to_have_attribute("data-index", str(first[0]))
    page.get_by_test_id("atoms-search").fill(label)

    # a click opens the images where the atom fires most, each with its map on a canvas and its box
    top = next(a for a in doc["atoms"] if a["index"] == ranked[0])
    cards.first.click()
    panel = page.get_by_test_id("atom-panel")
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("data-index", str(top["index"]))
    shown = list(dict.fromkeys(e["image"] for e in top["examples"] if str(e["image"]) in doc["crops"]))
    example_maps_shown(panel, shown, doc["crops"])
    expect(panel.locator(".at-drive")).to_have_count(len(top["drives"]))
    shot(page.locator("#atoms"), "dictionary")
    page.get_by_test_id("atom-close").click()
    expect(panel).to_be_hidden()
    assert not outside, outside


def test_app_dictionaries_page_lists_and_shows_the_saved_dictionary(page, console, small_dictionary, lite0):
    from blocklens.app import BlocklensApp

    d = small_dictionary.result
    state = BlocklensApp(store=small_dictionary.store, render=False)
    state._models[(lite0.name, "analysis")] = lite0
    with serve_app(state) as url:
        page.goto(url + "/#dictionaries")
        expect(page.locator("#dictionaries-page")).to_be_visible()
        expect(page.locator("#blocklens")).to_be_hidden()
        pick = page.locator("#dict-pick")
        expect(pick.locator("option")).to_have_count(1)
        expect(pick).to_have_value(d.key)
        result = page.locator("#dictionaries-result")
        expect(result).to_have_attribute("data-ready", "1", timeout=60000)
        expect(page.locator("#dict-error")).to_be_empty()
        cards, order = _cards(result)
        expect(cards).to_have_count(6)
        cards.first.click()
        expect(result.get_by_test_id("atom-panel").locator("canvas.cc-map").first).to_be_visible()
        shot(page.locator("body"), "app-dictionaries")
