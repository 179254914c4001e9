"""One image read in a concept dictionary's atoms (``explain(..., dictionary=)``, ``blocklens explain --dictionary``),
proven on the planted model of tests/planted.py: the atom that sits on the mark carries the marked class, removing it
lowers the class, atoms plus residual add up to the layer's linear attribution, and a dictionary of another model is
refused with one clear error.

The dictionary here is fitted directly (one batched forward over 16 images and an NMF of their positions, in the
layer's non-negative space, as the dictionary's own training does) so that the module runs in seconds; learning it
through the whole pipeline is tests/test_concept_dictionary.py's subject."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import blocklens as bl
from blocklens.analyses.atoms import atom_attribution
from blocklens.analyses.attribution import class_gradients
from blocklens.analyses.factorize import nmf_matrix
from blocklens.cli import main
from blocklens.dataset.dictionary import Atom, Codebook, ConceptDictionary
from blocklens.dataset.dictionary.storage import save_dictionary
from blocklens.errors import BlocklensError
import planted
from playwright.sync_api import expect
from test_browser import CHROMIUM, browser_context_args, browser_type_launch_args, console  # noqa: F401 (fixtures)

LAYER = "blocks.11"
K = 24
MARK_CELL = (1, 5)   # (y, x) of the 7x7 cell on the mark's centre (180, 44) in the 224 px frame


@pytest.fixture(scope="module")
def planted_setup(lite0, tmp_path_factory):
    """The planted head, its folder, a K-atom dictionary of its layer saved in a store, and the mark atom (the atom
    whose code at the mark's cell grows most from the plain twins to the marked images)."""
    root = planted.make_folder(tmp_path_factory.mktemp("marked"), 8, mark=planted.MARK)
    head = planted.train_head(lite0, root)
    assert head.train_accuracy == 1.0
    paths = sorted(root.glob("*/*.png"))
    x = torch.cat([head.prepare(p)[0] for p in paths])
    acts = head.activations(x, LAYER)[LAYER]                                   # (N, C, 7, 7), signed
    c = acts.shape[1]
    rows = acts.permute(0, 2, 3, 1).reshape(-1, c).double()
    _, comps, _ = nmf_matrix(torch.cat([rows.clamp(min=0), (-rows).clamp(min=0)], 1).numpy(), K)
    cb = Codebook(method="nmf", atoms=(comps / np.linalg.norm(comps, axis=1, keepdims=True)).astype(np.float32),
                  channels=c, signed=True)
    grow = np.zeros(K)
    for i, p in enumerate(paths):
        if p.parent.name == "marked":
            twin = paths.index(root / "plain" / p.name)
            y, xx = MARK_CELL
            grow += (cb.encode_acts(acts[i]).reshape(7, 7, K)[y, xx] - cb.encode_acts(acts[twin]).reshape(7, 7, K)[y, xx]).numpy()
    mark = int(np.argmax(grow))
    d = ConceptDictionary(key="planted0123456789", model=head.name, fingerprint=head.fingerprint, layer=LAYER,
                          folder=str(root), images=[str(p.relative_to(root)) for p in paths], method="nmf",
                          atoms=[Atom(index=i, direction=cb.directions[i], vector=cb.atoms[i]) for i in range(K)],
                          quality={}, codebook=cb, labels=list(head.labels), class_drops=np.zeros((K, 2), np.float32))
    store = bl.IconStore(tmp_path_factory.mktemp("store"))
    save_dictionary(d, store)
    return {"head": head, "root": root, "cb": cb, "mark": mark, "dictionary": d, "store": store}


def test_atoms_and_residual_add_up_to_the_layers_linear_attribution(planted_setup):
    s = planted_setup
    image = s["root"] / "marked" / "002.png"
    r = atom_attribution(s["head"], image, s["cb"], LAYER, classes=["marked", "plain"], score="logit")
    assert r.attribution.shape == (K, 2) and r.codes.shape == (7, 7, K) and r.score == "logit"
    np.testing.assert_allclose(r.attribution.sum(0) + r.residual, r.whole, rtol=1e-5)
    assert (r.adds_up < 1e-5).all()
    # the whole is grad . activation of the layer, computed independently
    act, g, _ = class_gradients(s["head"], s["head"].prepare(image)[0], LAYER, [0, 1], "logit")
    np.testing.assert_allclose(r.whole, (act[None].double() * g.double()).flatten(1).sum(1).numpy(), rtol=1e-5)
    # the reconstruction's own error is reported beside it
    assert 0 < r.relative_error < 1
    # the semantic dictionary in atoms: each position's top atoms by code, largest first
    top = r.top_atoms[MARK_CELL]
    assert top[0] == int(np.argmax(r.codes[MARK_CELL])) and r.top_codes[MARK_CELL][0] >= r.top_codes[MARK_CELL][1]


def test_the_mark_atom_carries_the_marked_class_and_removing_it_lowers_the_class(planted_setup):
    s = planted_setup
    mark = s["mark"]
    r = atom_attribution(s["head"], s["root"] / "marked" / "002.png", s["cb"], LAYER, classes=["marked", "plain"])
    assert r.ranked(0)[0][0] == mark, r.ranked(0)[:4]
    check = r.removal[0]
    assert check["label"] == "marked" and mark in check["atoms"] and mark in check["together"]
    i = check["atoms"].index(mark)
    assert check["actual"][i] > 0 and check["top_agrees"]
    assert check["prob_without"] < check["prob"] - 0.2, check
    # the semantic dictionary in atoms puts it first at the mark's cell, where on the plain twin it is (nearly) absent
    assert r.top_atoms[MARK_CELL][0] == mark
    twin = s["cb"].encode_acts(s["head"].activations(s["head"].prepare(s["root"] / "plain" / "002.png")[0], LAYER)[LAYER][0])
    assert float(twin.reshape(7, 7, K)[MARK_CELL][mark]) < 0.25 * float(r.codes[MARK_CELL][mark])


@pytest.fixture(scope="module")
def explained(planted_setup):
    """The marked image explained with the dictionary, by its key in the store (one layer, the light options)."""
    s = planted_setup
    return bl.explain(s["root"] / "marked" / "002.png", model=s["head"], layers=[LAYER], group_counts=[2],
                      n_groups=2, icons=False, grids=False, faithfulness=False, group_method="linear",
                      store=s["store"], dictionary=s["dictionary"].key)


def test_explain_with_a_dictionary_adds_the_atoms_section_to_the_json_and_the_report(planted_setup, explained):
    s, e = planted_setup, explained
    assert e.atoms is not None and e.atoms.layer == LAYER and e.atoms.key == s["dictionary"].key
    assert e.atoms.ranked(0)[0][0] == s["mark"]
    data = json.loads(json.dumps(e.to_json()))
    a = data["atoms"]
    assert a["dictionary"]["model"] == s["head"].name and str(s["mark"]) in a["dictionary"]["shown"]
    assert str(s["mark"]) in a["maps"] and len(a["removal"]) == len(e.classes)
    html = e.to_html()
    page = json.loads(html.split('id="blocklens-data">', 1)[1].split("</script>", 1)[0])
    assert page["atoms"]["layer"] == LAYER and len(page["atoms"]["top_atoms"]) == 7
    # without a dictionary nothing changes
    plain = bl.explain(s["root"] / "marked" / "002.png", model=s["head"], layers=[LAYER], group_counts=[2],
                       n_groups=2, icons=False, grids=False, faithfulness=False, group_method="linear", store=False)
    assert plain.atoms is None and "atoms" not in plain.to_json()


def test_a_dictionary_of_another_model_is_refused_naming_both(planted_setup, lite0):
    s = planted_setup
    with pytest.raises(BlocklensError, match=f"learned on {s['head'].name}.*not on {lite0.name}"):
        bl.explain(bl.bundled_image("dog"), model=lite0, icons=False, grids=False, store=s["store"],
                   dictionary=s["dictionary"])


@pytest.mark.parametrize("key, says", [("planted0123456789", "was learned on lite0-head"),
                                       ("nosuchkey", "no dictionary 'nosuchkey'")])
def test_the_command_turns_a_bad_dictionary_into_one_error_line_with_status_2(planted_setup, tmp_path, capsys, key,
                                                                             says):
    rc = main(["explain", "dog", "--dictionary", key, "--store", str(planted_setup["store"].root), "--quiet",
               "--cached-only", "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("blocklens: error:") and says in err[0], err
    if key == "nosuchkey":
        assert "planted0123456789" in err[0]   # the keys the store holds
    assert not (tmp_path / "r.html").exists()


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}")
def test_the_report_shows_the_atoms_section(planted_setup, explained, page, console, tmp_path):
    e, mark = explained, planted_setup["mark"]
    page.goto(e.save_html(tmp_path / "r.html").as_uri())
    page.wait_for_selector("#blocklens[data-ready]")
    section = page.locator("#atoms")
    expect(section.locator("h2")).to_have_text(f"Atoms at {LAYER}")
    expect(section.locator(".ax-cell")).to_have_count(49)
    expect(section.locator(".ax-bars .ax-row[data-atom]")).to_have_count(10)
    expect(section.get_by_test_id("atoms-residual")).to_contain_text("residual")
    expect(section.get_by_test_id("atoms-check")).to_contain_text("rank correlation")
    first = section.locator(".ax-bars .ax-row[data-atom]").first
    assert int(first.get_attribute("data-atom")) == mark       # the bars of "marked" start with the mark atom
    first.hover()
    expect(section).to_have_attribute("data-atom", str(mark))
    section.locator(".tabs .tab").nth(1).click()
    expect(section).to_have_attribute("data-cls", "1")
    expect(page.locator("nav.jump a[href='#atoms']")).to_have_count(1)
