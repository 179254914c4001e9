"""The probe on an awkward hand-written model: a reused ReLU, in-place ops, nested Sequentials, a tuple output.

Every call site's captured activation must equal a manual re-computation, and no hook may remain after a
normal run, an exception in forward or an exception in backward.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import blocklens as bl
from blocklens.errors import BlocklensError, UnknownNameError


class Block(nn.Module):
    """ResNet basic block: one ReLU module used twice, and an in-place residual add."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TupleHead(nn.Module):
    def forward(self, x):
        return x.mean((2, 3)), x.amax((2, 3))


class Trap(nn.Module):
    """Identity that can raise in forward, or in backward."""

    def __init__(self):
        super().__init__()
        self.fail_forward = False
        self.fail_backward = False

    def forward(self, x):
        if self.fail_forward:
            raise RuntimeError("boom in forward")
        return _FailingBackward.apply(x, self.fail_backward)


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fail):
        ctx.fail = fail
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        if ctx.fail:
            raise RuntimeError("boom in backward")
        return g, None


class Net(nn.Module):
    def __init__(self, c=6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(nn.Sequential(Block(c), Block(c)), nn.Sequential(Trap(), Block(c)))
        self.head = TupleHead()
        self.fc = nn.Linear(c, 4)

    def forward(self, x):
        mean, peak = self.head(self.stages(self.stem(x)))
        return self.fc(mean + peak)


def make_net():
    torch.manual_seed(1)
    net = Net()
    for m in net.modules():  # non-trivial BatchNorm statistics so BN really changes values
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def bn(m, x):
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def manual(net, x):
    """Every call site recomputed without in-place ops or hooks."""
    out = {}
    s = net.stem
    out["stem.0"] = h = s[0](x)
    out["stem.1"] = h = bn(s[1], h)
    out["stem.2"] = out["stem"] = h = h.clamp_min(0)
    blocks = [("stages.0.0", net.stages[0][0]), ("stages.0.1", net.stages[0][1]), ("stages.1.1", net.stages[1][1])]
    for path, b in blocks:
        if path == "stages.1.1":
            out["stages.1.0"] = h
        identity = h
        out[f"{path}.conv1"] = t = F.conv2d(h, b.conv1.weight, b.conv1.bias, padding=1)
        out[f"{path}.bn1"] = t = bn(b.bn1, t)
        out[f"{path}.relu#0"] = t = t.clamp_min(0)
        out[f"{path}.conv2"] = t = F.conv2d(t, b.conv2.weight, b.conv2.bias, padding=1)
        out[f"{path}.bn2"] = t = bn(b.bn2, t)
        out[f"{path}.relu#1"] = out[path] = h = (t + identity).clamp_min(0)
        if path == "stages.0.1":
            out["stages.0"] = h
    out["stages.1"] = out["stages"] = h
    out["head[0]"], out["head[1]"] = mean, peak = h.mean((2, 3)), h.amax((2, 3))
    out["fc"] = net.fc(mean + peak)
    return out


def all_hooks(net):
    found = []
    for name, m in net.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs"):
            found += [(name, attr, k) for k in getattr(m, attr, {})]
    return found


@pytest.fixture
def model():
    return bl.wrap(make_net(), input_size=16, labels=list("abcd"))


def test_layer_names_cover_reuse_and_tuples(model):
    names = model.layers.names
    assert "stages.0.0.relu#0" in names and "stages.0.0.relu#1" in names
    assert "stages.0.0.relu" not in names  # a reused module is listed per call...
    assert model.layer("stages.0.0.relu").name == "stages.0.0.relu#0"  # ...and a plain name means call 0
    assert "head[0]" in names and "head[1]" in names
    assert model.layer("head").name == "head[0]"  # a plain name of a tuple output means element 0
    assert model.layer("stages.0.0.relu#1").shape == (6, 16, 16)
    assert model.layer("head[1]").shape == (6,)
    with pytest.raises(UnknownNameError, match="stages.0.0.relu#0"):
        model.layer("stages.0.0.relu#2")
    with pytest.raises(UnknownNameError, match="stages.0.0.conv1"):
        model.layer("stages.0.0.conv")
    with pytest.raises(BlocklensError, match="malformed"):
        model.layer("stages[x]")


def test_captured_equals_manual_for_every_call_site(model):
    x = torch.randn(2, 3, 16, 16)
    expected = manual(model.module, x)
    with torch.no_grad():
        expected = {k: v.clone() for k, v in expected.items()}
    names = [n for n in model.layers.names]
    got = model.activations(x, names, stop=False)
    assert set(expected) <= set(got) | {"stages.0.0.relu", "head"}
    for name, want in expected.items():
        assert torch.allclose(got[name], want, atol=1e-5), name
    # the BN output before the in-place ReLU, and bn2 before the in-place `+=`, are kept as they were
    assert (got["stem.1"] < 0).any()
    assert not torch.allclose(got["stages.0.0.bn2"], got["stages.0.0"])


def test_gradients_equal_manual_autograd(model):
    x = torch.randn(2, 3, 16, 16)
    ref = manual(model.module, x)
    sites = ["stem.1", "stages.0.0.relu#0", "stages.0.0.bn2", "stages.0.1", "head[1]"]
    for s in sites:
        ref[s].retain_grad()
    ref["fc"][:, 1].sum().backward()
    with model.probe(sites, grad=True) as probe:
        out = probe.run(x, stop=False)
        out[:, 1].sum().backward()
    for s in sites:
        assert torch.allclose(probe.gradients[s], ref[s].grad, atol=1e-5), s
        assert torch.allclose(probe.activations[s].detach(), ref[s].detach(), atol=1e-5), s


def test_output_unchanged_by_probe(model):
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        plain = model(x)
        with model.probe(["stem.1", "stages.0.0.bn2", "head[0]"], grad=True) as probe:
            probed = probe.run(x, stop=False)
    assert torch.allclose(plain, probed, atol=1e-6)


def test_stop_after_deepest_layer(model):
    model.layers  # discovery runs one full forward; do it before counting
    calls = []
    handle = model.module.fc.register_forward_hook(lambda *a: calls.append("fc"))
    try:
        with model.probe(["stem.2", "stages.0.1"]) as probe:
            assert probe.run(torch.randn(1, 3, 16, 16)) is None
        assert calls == [] and set(probe.activations) == {"stem.2", "stages.0.1"}
        model.activations(torch.randn(1, 3, 16, 16), ["stem.2"], stop=False)
        assert calls == ["fc"]
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 4)  # the model still runs fully afterwards
    finally:
        handle.remove()


def test_no_hooks_remain_after_normal_run_and_exceptions(model):
    net = model.module
    user_calls = []
    user = net.stem[0].register_forward_hook(lambda *a: user_calls.append(1))
    before = all_hooks(net)
    sites = ["stem.1", "stages.0.0.relu#1", "stages.1.1.bn2", "head[0]"]

    model.activations(torch.randn(1, 3, 16, 16), sites)
    assert all_hooks(net) == before

    trap = net.stages[1][0]
    trap.fail_forward = True
    with pytest.raises(RuntimeError, match="boom in forward"):
        with model.probe(sites, grad=True) as probe:
            probe.run(torch.randn(1, 3, 16, 16), stop=False)
    assert all_hooks(net) == before
    trap.fail_forward = False

    trap.fail_backward = True
    with pytest.raises(RuntimeError, match="boom in backward"):
        with model.probe(sites, grad=True) as probe:
            x = torch.randn(1, 3, 16, 16, requires_grad=True)
            probe.run(x, stop=False).sum().backward()
    assert all_hooks(net) == before
    trap.fail_backward = False

    # the user's own hook survived every one of those and still fires
    user_calls.clear()
    model(torch.randn(1, 3, 16, 16))
    assert user_calls == [1]
    user.remove()
    assert all_hooks(net) == []


def test_no_hooks_on_the_embedded_model_after_exception(lite0):
    with pytest.raises(ValueError):
        with lite0.probe(["blocks.3"], grad=True):
            raise ValueError("user code failed")
    assert all_hooks(lite0.module) == []


def test_probe_misuse(model):
    probe = model.probe(["stem.1"])
    with pytest.raises(BlocklensError, match="inside"):
        probe.run(torch.randn(1, 3, 16, 16))


def test_a_probe_with_gradients_frees_its_graph(lite0):
    """Probe(grad=True): once the probe is dropped, its graph goes too (no cycle through the gradient hooks)."""
    import gc
    import weakref

    x = torch.zeros(2, 3, 64, 64, requires_grad=True)
    with lite0.probe(["blocks.3"], grad=True) as p:
        p.run(x, stop=True)
        a = p.activations["blocks.3"]
        a.sum().backward()
        assert p.gradients["blocks.3"].shape == a.shape
    ref = weakref.ref(a)
    del p, a
    gc.collect()
    assert ref() is None
