"""Faithfulness: batched interventions equal a plain computation, and at the default layers and defaults the
shown numbers agree with what removing the things they credit does (a few photos; the bench has all 10)."""
import numpy as np
import pytest
import torch

import blocklens as bl
from blocklens.analyses import faithfulness as F
from blocklens.analyses.attribution import (channel_attribution, class_gradients, class_path_gradients,
                                           spatial_attribution)
from blocklens.analyses.common import prepare
from blocklens.analyses.groups import group_attribution, neuron_groups
from blocklens.explain import ATTRIBUTION
from blocklens.recipes import default_layers

from conftest import assert_close

PHOTOS = [("dog", 249), ("chelsea", 282), ("collies", 232)]


def plain_scores(model, x, layer, replacement, cls, score):
    """The score of ``cls`` with ``layer``'s output replaced, one variant at a time, by a plain forward hook."""
    module = model.module.get_submodule(layer)
    out = []
    for r in replacement:
        h = module.register_forward_hook(lambda _m, _i, _o, r=r: r[None].clone())
        try:
            with torch.no_grad():
                logits = model.module(x)
        finally:
            h.remove()
        v = logits[0, cls]
        out.append(float(v - torch.logsumexp(logits[0], 0)) if score == "logprob" else float(v))
    return np.array(out)


@pytest.fixture(scope="module")
def dog(lite0):
    return prepare(lite0, bl.bundled_image("dog"))


def test_batched_group_interventions_equal_one_by_one(lite0, dog):
    g = neuron_groups(lite0, dog, "blocks.11", 4, classes=[249])
    act = F.layer_activation(lite0, dog.x, "blocks.11")
    parts = torch.as_tensor(F.group_parts(act.double().numpy(), g), dtype=act.dtype)
    iv = F.group_interventions(lite0, dog.x, g, [249], "logprob")
    full = plain_scores(lite0, dog.x, "blocks.11", act[None], 249, "logprob")[0]
    removed = plain_scores(lite0, dog.x, "blocks.11", act[None] - parts, 249, "logprob")
    alone = plain_scores(lite0, dog.x, "blocks.11", parts, 249, "logprob")
    empty = plain_scores(lite0, dog.x, "blocks.11", torch.zeros_like(act)[None], 249, "logprob")[0]
    assert_close(iv["removal"][:, 0], full - removed, atol=2e-4)  # differences of log-probabilities
    assert_close(iv["restore"][:, 0], alone - empty, atol=2e-4)
    # the ablation attribution shown for groups is exactly these removal effects, every class at once
    ab = neuron_groups(lite0, dog, "blocks.11", 4, classes=[249, 235], score="logprob", method="ablation")
    assert_close(ab.attribution[:, 0], full - removed, atol=2e-4)
    assert ab.to_json()["score"] == "logprob" and ab.to_json()["method"] == "ablation"


def test_batched_channel_and_spatial_deletion_equal_one_by_one(lite0, dog):
    act = F.layer_activation(lite0, dog.x, "blocks.11")
    values = np.arange(act.shape[0])[::-1].astype(float)   # ranks channel 0 first
    cd = F.channel_deletion(lite0, dog.x, "blocks.11", values, [249], k=3, ks=[3], n_random=2)
    masked = act.clone(); masked[:3] = 0
    assert_close(cd.top[0], plain_scores(lite0, dog.x, "blocks.11", masked[None], 249, "logit")[0], atol=2e-4)
    assert cd.channels == [0, 1, 2]
    m = np.zeros((7, 7)); m[0, 0] = 2; m[3, 3] = 1       # (0, 0) first, then (3, 3)
    sd = F.spatial_deletion(lite0, dog.x, "blocks.11", m, [249], steps=49, n_random=1)
    masked = act.clone(); masked[:, 0, 0] = 0; masked[:, 3, 3] = 0
    assert_close(sd.deletion[2], plain_scores(lite0, dog.x, "blocks.11", masked[None], 249, "logit")[0], atol=2e-4)
    only = torch.zeros_like(act); only[:, 0, 0] = act[:, 0, 0]
    assert_close(sd.insertion[1], plain_scores(lite0, dog.x, "blocks.11", only[None], 249, "logit")[0], atol=2e-4)


def test_group_flows_by_removal_equal_one_by_one(lite0, dog):
    g7 = neuron_groups(lite0, dog, "blocks.7", 3, classes=[249])
    g11 = neuron_groups(lite0, dog, "blocks.11", 3, classes=[249])
    flows = group_attribution(lite0, dog, g7, g11, method="ablation")
    act = F.layer_activation(lite0, dog.x, "blocks.7")
    parts = F.group_parts(act.double().numpy(), g7)
    from blocklens.analyses.groups import _pattern_scores

    def later_scores(a7):
        with torch.no_grad(), lite0.probe(["blocks.7", "blocks.11"], edit={"blocks.7": lambda t: a7[None]}) as p:
            p.run(dog.x)
        return _pattern_scores(p.activations["blocks.11"], g11).numpy()

    base = later_scores(act)
    for i in range(3):
        assert_close(flows[i], base - later_scores(act - torch.as_tensor(parts[i], dtype=act.dtype)), atol=1e-4)


@pytest.mark.parametrize("name, cls", PHOTOS)
def test_default_numbers_are_faithful(lite0, name, cls):
    """At the default layers with the default score and methods: the group numbers rank like the removal
    effects (by construction for ablation: checked here against an independent computation), the top-8 channels
    matter more than 8 random ones, and the map's deletion curve falls faster than a random order's."""
    prep = prepare(lite0, bl.bundled_image(name))
    assert lite0.predict(prep.x, top=1)[0].index == cls
    score = ATTRIBUTION["score"]
    for layer in default_layers(lite0):
        act, grads, _ = class_gradients(lite0, prep.x, layer, [cls], score)
        prod = (act * grads[0]).double().numpy()
        assert ATTRIBUTION["channels"] == "linear" and ATTRIBUTION["spatial"] == "path"
        _, pg, _, _ = class_path_gradients(lite0, prep.x, layer, [cls], score, steps=ATTRIBUTION["spatial_steps"])
        g = neuron_groups(lite0, prep, layer, classes=[cls], score=score, method=ATTRIBUTION["groups"])
        rep = F.layer_report(lite0, prep.x, layer, cls, name, channel_values=prod.sum((1, 2)),
                             channel_method="linear", spatial_map=(act * pg[0]).sum(0).numpy(),
                             spatial_method="path", groups=g, score=score, act=act)
        assert rep["groups"]["rank_correlation"] >= 0.8 and rep["groups"]["top_agrees"], (name, layer)
        assert rep["channels"]["wins"], (name, layer, rep["lines"]["channels"])
        assert rep["spatial"]["deletion_wins"], (name, layer, rep["lines"]["spatial"])
        assert set(rep["lines"]) == {"channels", "spatial", "groups"}


def test_linear_group_attribution_is_what_the_issue_measured(lite0, dog):
    """Why the default changed: the logit's linear group attribution at blocks.11 is negative for every group
    of dog.jpg although removing the dog's group drops malamute the most."""
    lin = neuron_groups(lite0, dog, "blocks.11", classes=[249])
    ab = neuron_groups(lite0, dog, "blocks.11", classes=[249], method="ablation")
    assert (lin.attribution[:, 0] < 0).all()
    assert ab.attribution[:, 0].max() > 1 and lin.method == "linear" and ab.method == "ablation"


def test_every_result_names_score_and_method(lite0, dog):
    c = channel_attribution(lite0, dog, "blocks.11", "malamute", score="logprob").to_json()
    assert (c["score"], c["method"]) == ("logprob", "linear") and "score_value" in c
    p = channel_attribution(lite0, dog, "blocks.11", ("malamute", "German shepherd")).to_json()
    assert p["score"] == "pair"
    s = spatial_attribution(lite0, dog, "blocks.11", "malamute", score="logprob").to_json()
    assert (s["score"], s["method"]) == ("logprob", "linear")
    # the logprob gradient is the logit gradient minus the probability-weighted mean of all logits' gradients
    lp = channel_attribution(lite0, dog, "blocks.11", "malamute", score="logprob").values
    lg = channel_attribution(lite0, dog, "blocks.11", "malamute").values
    assert not np.allclose(lp, lg)


def test_class_path_gradients_batch_equals_one_by_one(lite0, dog):
    act, g, s, s0 = class_path_gradients(lite0, dog.x, "blocks.11", [249, 235], "logprob", steps=8, chunk=5)
    for k, c in enumerate([249, 235]):
        one = channel_attribution(lite0, dog, "blocks.11", c, method="path", steps=8, score="logprob")
        assert_close((act * g[k]).sum((1, 2)), one.values)
        assert_close(float(s[k]), one.score, atol=1e-4)
        assert_close(float(s0[k]), one.baseline, atol=1e-4)


def test_path_reaches_one_percent_at_200_steps(lite0, dog):
    r = channel_attribution(lite0, dog, "blocks.11", "malamute", method="path", steps=200)
    assert r.gap < 0.01
    s = spatial_attribution(lite0, dog, "blocks.11", "malamute", method="path", tolerance=0.01)
    assert s.gap < 0.01 and abs(s.maps.sum() - (s.score_value - s.baseline)) <= 0.01 * abs(s.score_value - s.baseline)


def test_rank_correlation_matches_scipy_with_ties():
    """Our Spearman (numpy only: scipy is no dependency of blocklens) equals scipy's, ties included."""
    scipy_stats = pytest.importorskip("scipy.stats")
    from blocklens.analyses.faithfulness import rank_correlation

    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = rng.integers(0, 4, 9).astype(float), rng.normal(size=9)
        if np.ptp(a) > 0:
            assert rank_correlation(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))
