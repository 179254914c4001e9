"""Feature visualization by direction, never by pixels: objectives rise, the target unit wins, seeds repeat."""
import numpy as np
import pytest
import torch
from torch import nn

import blocklens as bl
from blocklens.errors import BlocklensError, UnknownNameError
from blocklens.optvis import objectives as obj
from blocklens.optvis.render import render
from blocklens.optvis.rescue import relu_rescue
from blocklens.optvis.targets import parse_target

from test_probe import all_hooks

FAST = dict(size=64, steps=48, progress=False)


def test_objective_rises_and_seed_repeats(lite0):
    a = render(lite0, ["blocks.3:5"], **FAST)
    b = render(lite0, ["blocks.3:5"], **FAST)
    assert a.history[-1, 0] > a.history[0, 0] + 1.0
    assert np.array_equal(a.images, b.images)
    c = render(lite0, ["blocks.3:5"], seed=1, **FAST)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (1, 64, 64, 3) and 0 <= a.images.min() and a.images.max() <= 1


def test_same_init_makes_an_icon_independent_of_its_batch_mates(lite0):
    alone = render(lite0, ["blocks.3:5"], same_init=True, **FAST)
    together = render(lite0, ["blocks.3:9", "blocks.3:5", "blocks.3:20"], same_init=True, **FAST)
    diff = np.abs(alone.images[0] - together.images[1])
    # equal up to float noise of batched convolutions: a batch of 1 and a batch of 2 or more run different
    # convolution kernels, and 48 Adam steps amplify the difference; measured 0.0068 mean / 0.046 max on the
    # Xeon that CI runs on (under 0.005 on others), against 0.1+ mean for another seed below
    assert diff.mean() < 0.01 and diff.max() < 0.1
    other = render(lite0, ["blocks.3:5"], same_init=True, seed=3, **FAST)
    assert np.abs(alone.images[0] - other.images[0]).mean() > 10 * diff.mean()


def test_each_channel_wins_in_its_own_icon(lite0):
    """Specificity on a small sample (the full figure is bench/bench_specificity.py)."""
    channels = [1, 5, 9, 14]
    result = render(lite0, [f"blocks.3:{c}" for c in channels], size=64, steps=96, progress=False)
    x = lite0.normalize(torch.from_numpy(result.images).permute(0, 3, 1, 2))
    acts = lite0.activations(x, "blocks.3")["blocks.3"].mean((2, 3))  # (icons, channels)
    table = acts[:, channels]  # row: icon, column: channel
    for j in range(len(channels)):
        assert int(table[:, j].argmax()) == j, table


def test_neuron_and_logit_targets(lite0):
    r = render(lite0, ["blocks.9:12@7,7", "logit:espresso"], **FAST)
    assert (r.history[-1] > r.history[0]).all()
    assert r.names == ["blocks.9:12@7,7", "espresso"]


def test_composed_objective_with_batch(lite0):
    o = obj.channel("blocks.3", 5) - 1e-3 * obj.total_variation() + 0.1 * obj.diversity("blocks.3")
    assert o.layers == {"blocks.3"}
    r = render(lite0, o, batch=2, **FAST)
    assert r.images.shape[0] == 2 and r.history.shape == (48, 2)
    assert r.history[-1].mean() > r.history[0].mean()


def test_no_hooks_after_render_even_on_exception(lite0):
    calls = {"n": 0}

    def explode(ctx):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("objective failed")
        return ctx.layer("blocks.3")[:, 0].mean((1, 2))

    with pytest.raises(RuntimeError, match="objective failed"):
        render(lite0, obj.Objective(explode, ["blocks.3"]), **FAST)
    assert all_hooks(lite0.module) == []
    render(lite0, ["blocks.3:1"], size=64, steps=2, progress=False)
    assert all_hooks(lite0.module) == []


class _DeadNet(nn.Module):
    """A ReLU6 unit that is below zero everywhere for a grey image: its true gradient is zero."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(0.1)
            self.conv.bias.fill_(-0.5)  # reachable only by a bright image
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.act(self.conv(x))).flatten(1)


def test_dead_relu_rescue_revives_a_clipped_unit():
    model = bl.wrap(_DeadNet(), input_size=32, mean=(0.5, 0.5, 0.5), std=(1, 1, 1))
    kw = dict(size=32, steps=40, transforms=None, param="pixel", progress=False)
    without = render(model, ["act:0"], rescue_steps=0, **kw)
    rescued = render(model, ["act:0"], rescue_steps=40, **kw)
    assert without.history[-1, 0] == 0 and without.zero_grad_steps[0] == 40
    assert rescued.history[-1, 0] > 0.05 and rescued.zero_grad_steps[0] == 0
    assert all_hooks(model.module) == []


class _InvertedNet(nn.Module):
    """Lite0's blocks.15.depthwise.act in miniature: a unit that rises only as an upstream ReLU6 unit falls
    (negative weights after it), and that unit is already at zero on the starting image: the true and the
    redirected gradients are both zero, so the image never moved."""

    def __init__(self):
        super().__init__()
        self.up = nn.Conv2d(3, 1, 3, padding=1)
        self.dw = nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.up.weight.fill_(0.1)
            self.up.bias.fill_(-0.5)  # silent on a grey image
            self.dw.weight.fill_(-0.2)
            self.dw.bias.fill_(1.5)  # so the unit sits at its maximum, 1.5, wherever `up` is silent
        self.up_act, self.act = nn.ReLU6(), nn.ReLU6()

    def forward(self, x):
        return self.act(self.dw(self.up_act(self.up(x))))


def test_rescue_moves_units_that_only_rise_as_a_dead_unit_falls():
    """Lucid's rescue (the first 16 steps) left such units at their starting noise; now the rescue comes back
    whenever an image is stuck, and where even the redirected gradient is zero the image moves deeper into the
    region where its unit is at its maximum (a margin) instead of standing still."""
    model = bl.wrap(_InvertedNet(), input_size=32, mean=(0.5, 0.5, 0.5), std=(1, 1, 1))
    kw = dict(size=32, steps=64, transforms=None, param="pixel", progress=False, seed=0)
    off = render(model, ["act:0"], rescue_steps=0, **kw)
    on = render(model, ["act:0"], rescue_steps=16, **kw)
    assert off.zero_grad_steps[0] == 64
    assert on.zero_grad_steps[0] <= 0.1 * 64
    start = render(model, ["act:0"], rescue_steps=0, **{**kw, "steps": 1}).images[0]
    assert np.abs(on.images[0] - start).mean() > 0.02 and np.abs(off.images[0] - start).max() < 1e-6
    assert on.final[0] == pytest.approx(1.5, abs=1e-4)  # still at its maximum
    with torch.no_grad():  # and with a margin: the upstream unit is further below zero than at the start
        pre = lambda im: model.module.up(model.input_from_rgb(torch.from_numpy(im).permute(2, 0, 1)[None])).max()
        assert float(pre(on.images[0])) < float(pre(start))
    assert all_hooks(model.module) == []


def test_rescue_lets_gradient_only_where_it_does_not_push_deeper():
    relu = nn.ReLU6()
    with relu_rescue(relu) as r:
        r.active = True
        x = torch.tensor([[-1.0, 7.0, 3.0], [-1.0, 7.0, 8.0]], requires_grad=True)
        # minimizing -sum(y) asks every value to rise
        (g,) = torch.autograd.grad(-relu(x).sum(), x)
    # row 0 has a live unit (3.0): its true gradient is used as it is
    # row 1 has no true gradient at all: redirected below zero (rising helps), blocked above the cap
    assert torch.equal(g, torch.tensor([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("spec, error, message", [
    ("blocks.33:1", UnknownNameError, "blocks.3"),
    ("blocks.3:40", BlocklensError, "40 channels"),
    ("pool:3@1,1", BlocklensError, "no positions"),
    ("blocks.9:3@14,0", BlocklensError, "outside"),
    ("logit:tigger cat", UnknownNameError, "tiger cat"),
    ("blocks.3", BlocklensError, "LAYER:CHANNEL"),
    ("blocks.3:x", BlocklensError, "CHANNEL@X,Y"),
])
def test_bad_targets(lite0, spec, error, message):
    with pytest.raises(error, match=message):
        parse_target(lite0, spec)


def test_coarse_to_fine_starts_at_half_size_and_ends_at_full_size(lite0):
    """coarse=0.5: half the steps at half the size, then the upsampled image is optimized on at full size; the
    unit still wins on its own icon, and the option is part of the recipe only when set."""
    from blocklens.optvis.param import FourierImage
    from blocklens.recipes import recipe_for

    targets = ["blocks.5:3", "blocks.5:11"]
    r = render(lite0, targets, size=48, steps=24, coarse=0.5, same_init=True, progress=False)
    assert r.images.shape == (2, 48, 48, 3) and r.recipe["coarse"] == 0.5
    assert (r.history[-1] > r.history[0]).all()
    from blocklens import quality
    assert quality.assess(lite0, [r.uint8(0), r.uint8(1)], targets).specific.all()
    assert "coarse" not in recipe_for(size=48) and recipe_for(coarse=0.5)["coarse"] == 0.5
    f = FourierImage(batch=1, size=16, seed=0, sd=0.3)
    up = f.upsampled(32)
    assert tuple(up().shape) == (1, 3, 32, 32)
    small = torch.nn.functional.avg_pool2d(up(), 2)
    assert (small - f()).abs().mean() < 0.05  # the same picture, upsampled
    with pytest.raises(BlocklensError, match="param='fft'"):
        render(lite0, targets[:1], size=32, steps=4, coarse=0.5, param="pixel", progress=False)


# --- the render loop's phases, each alone ---------------------------------------------------------------------


def test_coarse_switch_and_contrast_ramp():
    from blocklens.optvis.render import _coarse_switch, contrast_ramp

    assert _coarse_switch(None, "fft", 48) is None and _coarse_switch(0, "fft", 48) is None
    assert _coarse_switch(0.5, "fft", 48) == 24 and _coarse_switch(0.01, "fft", 48) == 1
    assert _coarse_switch(0.99, "fft", 48) == 47  # the last step is always at full size
    with pytest.raises(BlocklensError, match="param='fft'"):
        _coarse_switch(0.5, "pixel", 48)
    with pytest.raises(BlocklensError, match=r"in \(0, 1\)"):
        _coarse_switch(1.5, "fft", 48)
    assert [contrast_ramp(0.5, s, 48) for s in (0, 12, 24, 40)] == [0.0, 0.5, 1.0, 1.0]
    assert contrast_ramp(0, 0, 48) == 1.0 and contrast_ramp(-1, 5, 48) == 1.0


def test_composite_puts_alpha_on_a_seeded_background():
    from blocklens.optvis.render import _composite

    rgb = torch.rand(2, 3, 4, 4)
    assert torch.equal(_composite(rgb, torch.Generator().manual_seed(1), 2, "cpu"), rgb)  # opaque: unchanged
    opaque = torch.cat([rgb, torch.ones(2, 1, 4, 4)], 1)
    clear = torch.cat([rgb, torch.zeros(2, 1, 4, 4)], 1)
    assert torch.equal(_composite(opaque, torch.Generator().manual_seed(1), 2, "cpu"), rgb)
    bg = torch.rand(2, 3, 1, 1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_composite(clear, torch.Generator().manual_seed(1), 2, "cpu"), bg.expand(2, 3, 4, 4))


def test_render_recipe_names_custom_parts():
    from blocklens.optvis.render import DEFAULTS, _render_recipe

    settings = {k: v for k, v in DEFAULTS.items() if k not in ("param", "transforms")}
    r = _render_recipe(param="fft", transforms=None, alpha=False, **settings)
    assert r["param"] == "fft" and r["transforms"] is None and list(r)[:4] == ["size", "steps", "lr", "seed"]
    r = _render_recipe(param=nn.Identity(), transforms=[nn.Identity()], alpha=True, **settings)
    assert r["param"] == "custom" and r["transforms"] == "custom" and r["alpha"] is True


def test_the_render_loop_steps_one_at_a_time_as_render(lite0):
    """The phases composed by hand give render's numbers, and a stuck image is counted per step."""
    from blocklens.optvis.render import _make_param, _make_transforms, _RenderLoop
    from blocklens.optvis.rescue import relu_rescue as rescue_ctx
    from blocklens.probe import Probe

    kw = dict(size=32, steps=3, seed=2)
    whole = render(lite0, ["blocks.3:5", "blocks.5:1"], progress=False, **kw)
    objective = sum(parse_target(lite0, t).objective(batch=b) for b, t in enumerate(["blocks.3:5", "blocks.5:1"]))
    image = _make_param("fft", 2, 32, True, False, [2, 3])
    loop = _RenderLoop(lite0, objective, image, batch=2, steps=3, size=32, lr=0.05, seed=2,
                       tf=_make_transforms("standard", 32), rescue_steps=16, contrast=None, switch=None)
    capped = loop.capped(True)
    with rescue_ctx(lite0.module, capped.values()) as rescue, \
            Probe(lite0.module, list(loop.infos.values()), grad=True) as probe:
        for step in range(3):
            loop.step(step, probe, rescue, capped)
    assert np.array_equal(loop.history, whole.history)
    assert np.array_equal(loop.final_images(), whole.images)
    loop.set_gradients([torch.zeros_like(loop.params[0])], step=7)
    assert loop.zero_steps.tolist() == [1, 1] and loop.stuck_at == 7
    assert all_hooks(lite0.module) == []
