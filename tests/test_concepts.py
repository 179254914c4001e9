"""Class concepts over a folder, proven on a model whose reason we planted: a head that can only tell its two classes
apart by a small synthetic mark must be found to rely on a concept that sits on the mark."""
import json

import numpy as np
import pytest

import blocklens as bl
from blocklens.cli import main
from blocklens.dataset import concepts as concepts_mod
from blocklens.dataset.concepts import class_concepts
from blocklens.errors import BlocklensError, CostError
import planted

TINY = dict(size=32, steps=2)
PER_CLASS = 32


def _run(lite0, root, mark, store, **kw):
    planted.make_folder(root, PER_CLASS, mark=mark)
    model = planted.train_head(lite0, root)
    assert model.train_accuracy == 1.0
    return model, class_concepts(model, root, "marked", layer="blocks.11", store=store, progress=False, **TINY, **kw)


@pytest.fixture(scope="module")
def marked(lite0, tmp_path_factory):
    root = tmp_path_factory.mktemp("marked")
    store = bl.IconStore(tmp_path_factory.mktemp("store"))
    model, result = _run(lite0, root, planted.MARK, store, vs="plain")
    return root, model, result, store


def _near(example, mark, px=40):
    """The patch is centred (its position's centre, in the 224 px frame) within ``px`` of the mark's centre."""
    (x, y), (mx, my) = example.centre, mark["centre"]
    return (x - mx) ** 2 + (y - my) ** 2 <= px * px


def test_the_planted_mark_is_the_first_concept_and_removing_it_flips_the_class(marked):
    _, _, result, _ = marked
    first = result.concepts[0]
    top8 = first.examples[:8]
    assert len(top8) == 8
    assert sum(_near(e, planted.MARK) for e in top8) >= 0.8 * 8, [e.box for e in top8]
    assert first.flips >= 0.8 and first.predicted == PER_CLASS
    assert "fixed-location" in {code for code, _ in first.flags}
    assert all(c.importance <= first.importance for c in result.concepts)
    # the other concepts are not where the mark is
    assert not any("fixed-location" in {code for code, _ in c.flags} for c in result.concepts[1:])


@pytest.mark.parametrize("mark", [planted.OTHER_MARK], ids=["disc"])
def test_a_mark_of_another_shape_colour_and_place_is_found_too(lite0, tmp_path, mark):
    _, result = _run(lite0, tmp_path / "photos", mark, tmp_path / "store", icons=False)
    first = result.concepts[0]
    assert sum(_near(e, mark) for e in first.examples[:8]) >= 0.8 * 8, [e.box for e in first.examples[:8]]
    assert first.flips >= 0.8


def test_without_a_mark_no_concept_is_flagged_by_the_location_audit(lite0, tmp_path):
    _, result = _run(lite0, tmp_path / "photos", None, tmp_path / "store", icons=False)
    flags = {code for c in result.concepts for code, _ in c.flags}
    assert not flags & {"fixed-location", "border"}, result.summary()


def test_examples_maps_icons_and_the_audit_add_up(marked):
    root, model, result, store = marked
    assert result.labels_from == "folders" and len(result.images) == PER_CLASS
    assert result.sample["rows"] == PER_CLASS * 16 and result.sample["images"] == PER_CLASS
    for c in result.concepts:
        assert c.maps.shape == (PER_CLASS, *model.layer("blocks.11").shape[1:]) and store.exists(c.key)
        assert sum(map(sum, c.location["heat"])) == min(32, PER_CLASS)
        for e in c.examples:
            assert e.path.startswith("marked/") and e.box[2] - e.box[0] == e.patch.shape[1]
            assert float(c.maps[e.image][e.y, e.x]) == pytest.approx(e.value, rel=1e-2, abs=1e-3)
    first = result.concepts[0]
    assert first.importance > 0 and first.importance >= result.concepts[-1].importance


def test_importance_is_the_removal_effect_measured_by_hand(marked):
    """One image, one concept: its map from the fixed components, its exact share removed at the layer, the rest of
    the network run: the drop of the class's log-probability is the per-image number the importance averages."""
    import torch

    from blocklens.analyses.factorize import nonneg_matrix, project, split_activations
    
    root, model, result, _ = marked
    c = result.concepts[0]
    e = c.examples[0]
    assert c.importance == pytest.approx(float(c.drops.mean()), rel=1e-5)
    assert c.logprob_drop == pytest.approx(float(c.logprob_drops.mean()), rel=1e-5)
    x, _ = model.prepare(root / e.path)
    act = model.activations(x, "blocks.11")["blocks.11"][0].double().numpy()
    comps = result.components.astype(np.float64)
    signed = comps.shape[1] == 2 * act.shape[0]
    maps = project(nonneg_matrix(act, signed)[0], comps).T.reshape(len(comps), *act.shape[1:])
    np.testing.assert_allclose(maps[c.index], c.maps[e.image].astype(np.float64), rtol=2e-2, atol=2e-3)
    parts, _ = split_activations(act, maps, comps, signed)
    removed = torch.as_tensor(act - parts[c.index], dtype=torch.float32)[None]
    with torch.no_grad(), model.probe(["blocks.11"], edit={"blocks.11": lambda t: removed}) as p:
        after = p.run(x, stop=False)
    with torch.no_grad():
        before = model(x)
    drop = float(before.log_softmax(-1)[0, result.cls] - after.log_softmax(-1)[0, result.cls])
    p_drop = float(before.softmax(-1)[0, result.cls] - after.softmax(-1)[0, result.cls])
    assert drop == pytest.approx(float(c.logprob_drops[e.image]), rel=1e-3, abs=1e-4)
    assert p_drop == pytest.approx(float(c.drops[e.image]), rel=1e-3, abs=1e-4)
    assert p_drop > 0.5  # the mark's concept carries the class on its best image


def test_the_vocabulary_of_the_pair(marked):
    _, _, result, _ = marked
    v = result.vocabulary
    assert v["a_label"] == "marked" and v["b_label"] == "plain" and v["images"] == 2 * PER_CLASS
    fors = [c for c in v["channels"] if c["side"] == "for"]
    against = [c for c in v["channels"] if c["side"] == "against"]
    assert len(fors) == len(against) == 8
    assert fors[0]["evidence"] >= fors[-1]["evidence"] > against[-1]["evidence"] >= against[0]["evidence"] or \
        fors[0]["evidence"] > 0 > against[0]["evidence"]
    # relevance maximization: the channel that argues most for "marked" finds its evidence on the mark
    assert sum(_near(e, planted.MARK, 48) for e in fors[0]["examples"]) >= 4


def test_json_report_and_a_warm_rerun_computes_nothing(marked, lite0, tmp_path, monkeypatch):
    root, model, result, store = marked
    d = result.to_json()
    json.dumps(d)
    assert d["kind"] == "concepts" and len(d["concepts"]) == result.k and d["crops"]
    assert d["concepts"][0]["examples"][0]["src"].startswith("data:image/webp;base64,")  # photo patches: WebP
    html = result.save_html(tmp_path / "c.html").read_text()
    assert "Content-Security-Policy" in html and '"kind":"concepts"' in html
    monkeypatch.setattr(concepts_mod.phases, "scan_chunk", lambda *a, **k: pytest.fail("a finished scan was redone"))
    monkeypatch.setattr(concepts_mod.phases, "measure_chunk", lambda *a, **k: pytest.fail("a finished measure was redone"))
    again = class_concepts(model, root, "marked", layer="blocks.11", vs="plain", store=store, progress=False, **TINY)
    assert [c.importance for c in again.concepts] == [c.importance for c in result.concepts]


def test_bad_input_says_what_would_be_valid(marked, lite0, tmp_path):
    root, model, _, store = marked
    with pytest.raises(BlocklensError, match="unknown class 'markd'.*marked"):
        class_concepts(model, root, "markd", layer="blocks.11", store=store)
    only = tmp_path / "only"
    (only / "plain").mkdir(parents=True)
    (only / "plain" / "a.png").write_bytes((root / "plain" / "000.png").read_bytes())
    with pytest.raises(BlocklensError, match="no images of class 'marked'.*plain"):
        class_concepts(model, only, "marked", layer="blocks.11", store=store)
    with pytest.raises(BlocklensError, match="fc.*positions|no positions|spatial"):
        class_concepts(model, root, "marked", layer="fc", store=store)
    with pytest.raises(BlocklensError, match="k=500 is not possible.*192 channels"):
        class_concepts(model, root, "marked", layer="blocks.11", k=500, store=store)
    with pytest.raises(CostError, match="max_images=10"):
        class_concepts(model, root, "marked", layer="blocks.11", max_images=10, store=store)


@pytest.mark.parametrize("args, message", [
    (["--class", "malamut"], "unknown class 'malamut'; closest: malamute"),
    (["--class", "malamute", "--layer", "fc"], "fc"),
    (["--class", "malamute", "--k", "999"], "k=999 is not possible"),
])
def test_cli_errors_are_one_line_with_status_2(args, message, capsys, tmp_path):
    code = main(["concepts", "--bundled", *args, "--store", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("blocklens: error:") and message in err and err.count("\n") == 1


def test_a_local_worker_gives_the_same_concepts(tmp_path):
    """``workers=1``: the chunks run in a spawned process that rebuilds the model from its spec; the concepts are
    the ones computed in this process."""
    from PIL import Image

    root = tmp_path / "photos"
    for i, (name, src) in enumerate([("malamute", "dog"), ("tiger cat", "chelsea")] * 3):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.open(bl.bundled_image(src)).rotate(3 * i).save(root / name / f"{i}.png")
    kw = dict(k=3, icons=False, progress=False)
    here = class_concepts("efficientnet_lite0", root, "malamute", store=tmp_path / "a", **kw)
    there = class_concepts("efficientnet_lite0", root, "malamute", store=tmp_path / "b", workers=1, threads=1, **kw)
    assert [c.index for c in there.concepts] == [c.index for c in here.concepts]
    for a, b in zip(here.concepts, there.concepts):
        assert b.importance == pytest.approx(a.importance, abs=1e-4)
        np.testing.assert_allclose(b.maps.astype(np.float32), a.maps.astype(np.float32), atol=1e-2)
