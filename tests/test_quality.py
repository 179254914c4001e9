"""Icon quality: the figures are right on images whose answer is known, saturated units keep a gradient, dead units
are flagged, the phase-only image keeps a photograph's spectrum, and one preset is chosen by device."""
import numpy as np
import pytest
import torch
from torch import nn

import blocklens as bl
from blocklens import quality
from blocklens.optvis.param import FourierImage, PhaseImage
from blocklens.optvis.render import render
from blocklens.optvis.rescue import capped_output, relu_rescue
from blocklens.optvis.spectrum import natural_spectrum

from test_probe import all_hooks


# --- pixel statistics on images with known answers -----------------------------------------------------------

def test_contrast_and_colourfulness_of_known_images():
    grey = np.full((32, 32, 3), 128, np.uint8)
    halves = grey.copy()
    halves[:, :16] = 0
    halves[:, 16:] = 255
    assert quality.rms_contrast(grey)[0] == 0
    assert quality.rms_contrast(halves)[0] == pytest.approx(0.5, abs=1e-6)  # luma 0 and 1, half each
    assert quality.colourfulness(np.stack([grey, halves]))[:2].tolist() == [0.0, 0.0]  # greys have no colour
    red_green = np.zeros((32, 32, 3), np.uint8)
    red_green[:, :16, 0] = 255
    red_green[:, 16:, 1] = 255
    # rg is +-255 half each (std 255), yb = 127.5 everywhere (mean 127.5): sqrt(255^2) + 0.3 * 127.5
    assert quality.colourfulness(red_green)[0] == pytest.approx(255 + 0.3 * 127.5, rel=1e-6)


def test_spectrum_slope_and_high_frequency_energy():
    rng = np.random.default_rng(0)
    n = 128
    f = np.sqrt(np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None, :] ** 2)
    f[0, 0] = 1
    pink = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) / f))  # power ~ 1/f^2
    pink = (pink - pink.min()) / np.ptp(pink)
    img = np.repeat(pink[..., None], 3, 2)
    assert quality.spectrum_slope(img)[0] == pytest.approx(-2.0, abs=0.35)
    checker = np.indices((n, n)).sum(0) % 2 * 1.0
    assert quality.hf_energy(np.repeat(checker[..., None], 3, 2))[0] > 0.95
    yy, xx = np.indices((n, n))
    blob = np.exp(-((yy - n / 2) ** 2 + (xx - n / 2) ** 2) / (2 * 12.0 ** 2))
    assert quality.hf_energy(np.repeat(blob[..., None], 3, 2))[0] < 0.01
    assert 0.1 < quality.hf_energy(img)[0] < 0.4  # 1/f^2 noise: ln(0.71/0.25) / ln(0.71/(1/128)) of its power
    photos = quality.photo_stats(56)
    assert -3.5 < photos["slope"] < -1.5 and 0.1 < photos["contrast"] < 0.3


# --- unit figures ----------------------------------------------------------------------------------------------

def test_assess_icons_of_three_channels(lite0):
    targets = ["blocks.3:5", "blocks.3:17", "blocks.3:30"]
    r = render(lite0, targets, size=48, steps=24, same_init=True, progress=False)
    q = quality.assess(lite0, [r.uint8(i) for i in range(3)], targets)
    assert q.specific.all() and (q.margin > 1).all()
    assert (q.strength > 1).all()  # rendered icons drive their channel past every photograph
    s = q.summary()
    assert s["specific"] == 3 and s["live"] == 3 and s["specificity"] == 1.0
    assert set(s["photos"]) == {"contrast", "colourfulness", "slope", "hf"}
    # swapping two icons makes both of them lose
    swapped = quality.assess(lite0, [r.uint8(1), r.uint8(0), r.uint8(2)], targets)
    assert swapped.specific.tolist() == [False, False, True]
    assert "specific 1/3" in swapped.line()


def test_assess_mixed_sizes_and_zero_gradient_steps(lite0):
    """Icons of two recipes (a pack's 128 px beside 56 px renders) are measured each at its own size, and the
    share of zero-gradient steps each icon's metadata records is reported with the other figures."""
    from blocklens.store import Icon

    targets = ["blocks.3:5", "blocks.3:17", "blocks.3:30"]
    small = render(lite0, targets[:2], size=40, steps=16, same_init=True, progress=False)
    big = render(lite0, targets[2:], size=64, steps=16, same_init=True, progress=False)
    icons = [Icon(small.uint8(i), {"target": targets[i], "recipe": {"steps": 16}, "zero_grad_steps": z})
             for i, z in enumerate((0, 4))] + [Icon(big.uint8(0), {"target": targets[2], "recipe": {"steps": 16},
                                                                   "zero_grad_steps": 0})]
    q = quality.assess(lite0, icons)
    assert q.specific.all()
    assert q.zero_grad.tolist() == [0.0, 0.25, 0.0]
    s = q.summary()
    assert s["zero_grad_max"] == 0.25 and s["stuck"] == 1
    assert "zero-gradient steps at most 25% (1 stuck above 10%)" in q.line()
    assert q.per_icon(1)["zero_grad"] == 0.25


def test_retrieval_finds_each_units_own_reference(lite0):
    """Semantic fidelity's core: an icon retrieves its own unit's reference among the references of other units
    (here the judge is the embedded model itself, for speed)."""
    targets = [f"blocks.5:{c}" for c in (3, 11, 29, 40)]
    ref = render(lite0, targets, size=48, steps=32, same_init=True, progress=False, seed=0)
    other = render(lite0, targets, size=48, steps=32, same_init=True, progress=False, seed=1)
    refs, queries = [ref.uint8(i) for i in range(4)], [other.uint8(i) for i in range(4)]
    same = quality.retrieval(lite0, refs, refs)
    assert same["top1"] == 1.0 and same["ranks"] == [1, 1, 1, 1]
    r = quality.retrieval(lite0, queries, refs)
    assert r["n"] == 4 and r["top1"] >= 0.75 and r["top3"] >= r["top1"]
    shuffled = quality.retrieval(lite0, queries, refs[1:] + refs[:1])
    assert shuffled["top1"] <= 0.25
    with pytest.raises(bl.BlocklensError, match="as many queries as references"):
        quality.retrieval(lite0, queries, refs[:3])


def test_grid_fidelity_of_a_grid_against_itself_and_another(lite0):
    from blocklens.optvis.grid import activation_grid

    g = activation_grid(lite0, bl.bundled_image("dog"), "blocks.14", cell=32, steps=3, progress=False)
    same = quality.grid_fidelity(lite0, g, g)
    assert same["top1"] == 1.0 and same["near1"] == 1.0 and same["n"] == 49
    other = activation_grid(lite0, bl.bundled_image("dog"), "blocks.7", cell=32, steps=3, progress=False)
    with pytest.raises(bl.BlocklensError, match="same layer"):
        quality.grid_fidelity(lite0, g, other)


class _Capped(nn.Module):
    """conv -> ReLU6; channel 0 starts just below the cap; channel 1's weights are zero and its bias is 9 (always at the cap: dead); a second head adds
    1 after its ReLU6 (clipped inside, not at its output)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight[0] = 0.05  # brighter input -> higher; grey sits just below the cap
            self.conv.bias[0] = 5.5
            self.conv.weight[1] = 0
            self.conv.bias[1] = 9.0
        self.act = nn.ReLU6()
        self.head = _AddAfter()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.head(self.act(self.conv(x)))).flatten(1)


class _AddAfter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.act = nn.ReLU6()

    def forward(self, x):
        return self.act(self.conv(x)) + 1.0


def _capped_model():
    torch.manual_seed(0)
    return bl.wrap(_Capped(), input_size=32, mean=(0.5, 0.5, 0.5), std=(0.1, 0.1, 0.1))


def test_gradient_passes_the_cap_only_where_asked():
    relu6 = nn.ReLU6()
    x = torch.tensor([[-1.0, 7.0, 3.0]], requires_grad=True)
    with relu_rescue(relu6, through_cap=[relu6]):
        (g,) = torch.autograd.grad(-relu6(x).sum(), x)
    assert torch.equal(g, torch.tensor([[0.0, -1.0, -1.0]]))  # above the cap: as the pre-activation
    with relu_rescue(relu6):
        (g,) = torch.autograd.grad(-relu6(x).sum(), x)
    assert torch.equal(g, torch.tensor([[0.0, 0.0, -1.0]]))
    assert all_hooks(relu6) == []


def test_capped_output_finds_the_rectifier_of_a_layer():
    m = _Capped()
    assert capped_output(m, "act") is m.act
    assert capped_output(m, "head") is m.head.act  # its last child; render checks it really is the output
    assert capped_output(m, "conv") is None


def test_saturated_unit_keeps_rising_and_a_dead_one_is_flagged():
    model = _capped_model()
    kw = dict(size=32, steps=30, progress=False, rescue_steps=0, same_init=True)
    # a strong mean/std makes channel 0 sit at 6 quickly; with the cap passed, its pre-activation keeps rising
    on = render(model, ["act:0"], through_cap=True, **kw)
    off = render(model, ["act:0"], through_cap=False, **kw)
    assert on.zero_grad_steps[0] < off.zero_grad_steps[0] or off.zero_grad_steps[0] == 0
    pre = lambda r: float(model.activations(model.input_from_rgb(torch.from_numpy(r.images).permute(0, 3, 1, 2)),
                                            ["conv"])["conv"][0, 0].mean())
    assert pre(on) > pre(off)
    # "head" adds 1 after its ReLU6: not capped at its output, so nothing passes there (and nothing breaks)
    render(model, ["head:0"], **kw)
    dead = render(model, ["act:1"], **kw)
    assert dead.zero_grad_steps[0] == 30
    q = quality.assess(model, [on.uint8(0), dead.uint8(0)], ["act:0", "act:1"], photo_size=32)
    assert q.dead.tolist() == [False, True] and not q.specific[1]
    assert q.summary()["dead"] == 1 and "1 dead" in q.line()
    assert all_hooks(model.module) == []


# --- parameterizations and recipes --------------------------------------------------------------------------

def test_phase_image_keeps_the_natural_spectrum_and_contrast():
    mag = natural_spectrum(48)
    assert mag.shape == (3, 48, 25) and float(mag[:, 0, 0].abs().max()) == 0
    img = PhaseImage(batch=2, size=48, seed=0)
    opt = torch.optim.Adam(img.parameters(), lr=0.1)
    before = quality.rms_contrast((img().detach().permute(0, 2, 3, 1).numpy()))
    for _ in range(10):
        opt.zero_grad()
        (-img()[:, 0].mean()).backward()  # push red up: the phases move, the magnitudes cannot
        opt.step()
    out = img().detach()
    after = quality.rms_contrast(out.permute(0, 2, 3, 1).numpy())
    assert np.allclose(before, after, atol=0.05)
    with pytest.raises(ValueError, match="alpha"):
        PhaseImage(alpha=True)


def test_contrast_ramp_standardizes_each_colour_channel():
    img = FourierImage(batch=2, size=32, seed=0)
    flat = img().detach()
    assert float(flat.std()) < 0.02  # Lucid's start: nearly grey
    img.standardize = 1.0
    t = torch.logit(img().detach().clamp(1e-6, 1 - 1e-6))
    assert float(t.std()) > 1.0  # a photograph's contrast from the first step


def test_default_preset_follows_the_device(lite0):
    from blocklens.recipes import PRESETS, default_preset, preset_note

    assert default_preset(lite0) == "quick"

    class _OnGpu:
        device = torch.device("cuda")

    assert default_preset(_OnGpu()) == "default"
    note = preset_note("quick", seconds=30.0, n_icons=200)
    assert "quick preset (128 px, 48 steps, coarse-to-fine)" in note and "default preset (128 px, 512 steps)" in note
    assert " min " in note
    assert "semantic fidelity of the quick preset" in note and "bench/bench_fidelity.py" in note
    assert "semantic fidelity" not in preset_note("quick", recipe={"size": 40})  # a changed recipe was not measured
    from blocklens.recipes import RECIPE_KEYS, recipe_for

    assert {"decay_power", "contrast", "through_cap"} <= set(RECIPE_KEYS)
    assert recipe_for(**PRESETS["quick"]["icons"]) != recipe_for(**PRESETS["lucid"]["icons"])


def test_explanation_carries_quality_and_the_recipe_note(tiny_explanation):
    e, _ = tiny_explanation
    assert e.preset == "quick"
    for lr in e.layers:
        q = e.quality[lr.layer]
        assert q["summary"]["icons"] == len(e.icon_index[lr.layer]["channels"])
        assert set(q["icons"]) == set(e.icon_index[lr.layer]["channels"].values())
        assert "specific" in q["line"]
    assert e.note.startswith("icons: quick preset (32 px, 2 steps, coarse-to-fine, changed)")
    j = e.to_json()
    assert j["quality"] and j["note"] == e.note


def test_units_whose_maximum_is_a_silent_input_are_flagged_with_the_figure(lite0, tmp_path):
    """blocks.15.depthwise.act 473 and 912: all-negative depthwise kernels, so they sit at their batch-norm bias
    wherever their input channel is silent: a blank image drives them as far as their icon does. 333 is a unit
    with a preference (its icon drives it far past any blank or photograph)."""
    from blocklens.quality import BLANK_TIE, assess

    units = [473, 912, 333]
    got = bl.icons(lite0, "blocks.15.depthwise.act", units, store=str(tmp_path), preset="quick", progress=False)
    q = assess(lite0, got)
    assert q.no_preference.tolist() == [True, True, False]
    for i in (0, 1):
        d = q.per_icon(i)
        assert d["no_preference"] and d["blank"] >= BLANK_TIE * d["own"] > 0
    assert q.per_icon(2)["blank"] < 0.5 * q.per_icon(2)["own"]
    assert q.summary()["no_preference"] == 2 and "2 with no preferred stimulus" in q.line()
