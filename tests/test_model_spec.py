"""Model specs: every form ``bl.load_model`` reads (zoo name, module:callable, torch.export file, timm:,
torchvision:, with --weights) and the one-line error for each way a spec can be wrong."""
from __future__ import annotations

import json
import sys
import types
import warnings

import pytest
import torch
from torch import nn

import blocklens as bl
from blocklens.cli import main
from blocklens.errors import BlocklensError
from blocklens.models.spec import RandomWeightsWarning


def small_net(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


# -------------------------------------------------------------------------------------------- zoo


def test_zoo_names_load_as_before(lite0):
    m = bl.load_model("efficientnet-lite0")
    assert m.name == "efficientnet_lite0" and m.input_size == 224 and m.fingerprint == lite0.fingerprint
    assert m.spec == "efficientnet-lite0" and m.weights is None
    assert not any(p.requires_grad for p in m.module.parameters())


def test_unknown_name_lists_the_zoo_and_the_forms():
    with pytest.raises(BlocklensError, match=r"unknown model 'efficientnet_lite9'; closest: .*efficientnet_lite0.*"
                                             r"module:callable"):
        bl.load_model("efficientnet_lite9")
    with pytest.raises(BlocklensError, match="write mypkg.nets:build"):
        bl.load_model("mypkg.nets.build")


# ------------------------------------------------------------------------------------ module:callable


def test_callable_returning_a_module_is_wrapped(user_pkg):
    state = torch.random.get_rng_state()
    m = bl.load_model("mypkg.nets:build")
    assert torch.equal(state, torch.random.get_rng_state())  # built under seed 0, the caller's generator restored
    assert m.name == "mypkg.nets:build" and m.spec == "mypkg.nets:build" and m.input_size == 64  # its input_size
    assert len(m.labels) == 10 and m.labels[3] == "class 3"
    assert [i.name for i in m.layers][:3] == ["0", "1", "2"]
    assert not any(p.requires_grad for p in m.module.parameters())
    assert bl.load_model("mypkg.nets:build").fingerprint == m.fingerprint  # same random init in every process
    assert m.predict(bl.bundled_image("dog"), top=2)[0].label.startswith("class ")
    assert bl.load_model("mypkg.nets:Factory.make").fingerprint == m.fingerprint  # a dotted attribute


def test_callable_with_1000_outputs_gets_imagenet_labels_and_224(user_pkg):
    m = bl.load_model("mypkg.nets:build_224")
    assert m.input_size == 224 and m.labels[281] == "tabby"


def test_callable_returning_a_model_is_used_as_is(user_pkg):
    m = bl.load_model("mypkg.nets:wrapped")
    assert m.name == "mine" and m.input_size == 48 and m.labels[0] == "thing 0" and m.spec == "mypkg.nets:wrapped"


def test_callable_with_weights(user_pkg, tmp_path):
    torch.manual_seed(5)
    theirs = small_net()
    ref = bl.load_model("mypkg.nets:build")
    net = ref.module
    other = {k: torch.randn_like(v) for k, v in net.state_dict().items()}
    torch.save(other, tmp_path / "w.pth")
    torch.save({"state_dict": other, "epoch": 3}, tmp_path / "ckpt.pt")  # a training checkpoint
    for f in ("w.pth", "ckpt.pt"):
        m = bl.load_model("mypkg.nets:build", weights=tmp_path / f)
        assert m.weights == str(tmp_path / f) and m.fingerprint != ref.fingerprint
        assert all(torch.equal(v, other[k]) for k, v in m.module.state_dict().items())
    torch.save(theirs.state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(BlocklensError, match=r"weights .*wrong.pth do not fit mypkg.nets:build: 4 missing key\(s\) "
                                             r"\(4.weight, 4.bias, 8.weight, ...\); 2 unexpected key\(s\) \(6.weight, "
                                             r"6.bias\); first shape mismatch: 0.weight is \(6, 3, 3, 3\) in the file "
                                             r"but \(8, 3, 3, 3\) in the model"):
        bl.load_model("mypkg.nets:build", weights=tmp_path / "wrong.pth")
    with pytest.raises(BlocklensError, match="no weights file 'nope.pth'"):
        bl.load_model("mypkg.nets:build", weights="nope.pth")
    torch.save(theirs, tmp_path / "whole.pt")  # a pickled module, not a state dict
    with pytest.raises(BlocklensError, match="cannot read .*whole.pt as a state dict"):
        bl.load_model("mypkg.nets:build", weights=tmp_path / "whole.pt")


def test_safetensors_weights(user_pkg, tmp_path, monkeypatch):
    net = bl.load_model("mypkg.nets:build").module
    other = {k: torch.randn_like(v) for k, v in net.state_dict().items()}
    st = types.ModuleType("safetensors")
    st_torch = types.ModuleType("safetensors.torch")
    st_torch.load_file = lambda path: other if path.endswith("w.safetensors") else {}
    st.torch = st_torch
    monkeypatch.setitem(sys.modules, "safetensors", st)
    monkeypatch.setitem(sys.modules, "safetensors.torch", st_torch)
    (tmp_path / "w.safetensors").write_bytes(b"fake")
    m = bl.load_model("mypkg.nets:build", weights=tmp_path / "w.safetensors")
    assert all(torch.equal(m.module.state_dict()[k], v) for k, v in other.items())


@pytest.mark.skipif(__import__("importlib").util.find_spec("safetensors") is not None, reason="safetensors installed")
def test_safetensors_weights_need_safetensors(user_pkg, tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(BlocklensError, match="pip install safetensors"):
        bl.load_model("mypkg.nets:build", weights=tmp_path / "w.safetensors")


@pytest.mark.parametrize("spec, message", [
    ("nosuchpkg.nets:build", r"no module named 'nosuchpkg'.*current directory"),
    ("mypkg.nosuch:build", r"no module named 'mypkg.nosuch'"),
    ("mypkg.broken:build", r"importing mypkg.broken failed: No module named 'no_such_dependency_xyz'"),
    ("mypkg.nets:biuld", r"mypkg.nets has no attribute 'biuld'; closest: build"),
    ("mypkg.nets:Factory.mkae", r"mypkg.nets:Factory has no attribute 'mkae'; closest: make"),
    ("mypkg.nets:NOT_CALLABLE", r"mypkg.nets:NOT_CALLABLE is a int, not a callable"),
    ("mypkg.nets:returns_int", r"returned a int; it must return a torch.nn.Module or a blocklens.Model"),
    ("mypkg.nets:needs_arg", r"calling mypkg.nets:needs_arg\(\) raised TypeError: .*depth"),
    ("mypkg.nets:raises", r"calling mypkg.nets:raises\(\) raised ValueError: no GPU today"),
    ("my pkg:build", r"not package.module:callable"),
])
def test_callable_errors(user_pkg, spec, message):
    with pytest.raises(BlocklensError, match=message):
        bl.load_model(spec)


# ------------------------------------------------------------------------------------------ files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny conv net saved as torch.export programs (dynamic batch; static and dynamic size), TorchScript and
    a torch.save pickle."""
    torch.manual_seed(0)
    net = small_net().eval()
    d = tmp_path_factory.mktemp("saved")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's: TorchScript is deprecated
        _save_all(net, d)
    return net, d


def _save_all(net, d):
    x = torch.rand(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=256)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: batch},)), d / "static.pt2")
    side = torch.export.Dim("side", min=8, max=512)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: batch, 2: side, 3: side},)),
                      d / "dynamic.pt2")
    torch.export.save(torch.export.export(net, (x,)), d / "batch2.pt2")
    torch.jit.save(torch.jit.script(net), d / "scripted.pt")
    torch.jit.save(torch.jit.trace(net, x), d / "traced.pt")
    torch.save(net, d / "pickled.pt")


def test_torch_export_program_keeps_its_layers_and_hooks(saved):
    net, d = saved
    m = bl.load_model(str(d / "static.pt2"))
    assert m.input_size == 32 and m.name == str(d / "static.pt2")
    names = [i.name for i in m.layers]  # found by forward hooks on the unflattened submodules
    assert names == [n for n, _ in net.named_modules() if n]
    assert [i.type for i in m.layers][:3] == ["Conv2d", "ReLU", "Conv2d"]  # the types they were, not Interpreter*
    x = torch.rand(3, 3, 32, 32)
    acts = m.activations(x, ["2", "6"])
    with torch.no_grad():
        assert torch.allclose(acts["2"], net[:3](x), atol=1e-5) and torch.allclose(acts["6"], net(x), atol=1e-5)
    assert m.fixed_size  # it refuses other sizes: feature visualization's inputs are resized to 32 px
    assert m(m.input_from_rgb(torch.rand(2, 3, 48, 48))).shape == (2, 10)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with m.probe(["2"], grad=True) as probe:  # gradients flow through it, as feature visualization needs
        probe.run(x, stop=False)
        probe.activations["2"][0, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_torch_export_with_dynamic_size_uses_224(saved):
    net, d = saved
    m = bl.load_model(str(d / "dynamic.pt2"))
    assert m.input_size == 224 and m.layers["3"].shape == (8, 112, 112)


def test_torch_export_with_weights(saved, tmp_path):
    net, d = saved
    other = {k: torch.randn_like(v) for k, v in net.state_dict().items()}
    torch.save(other, tmp_path / "w.pth")
    m = bl.load_model(str(d / "static.pt2"), weights=tmp_path / "w.pth")
    assert all(torch.equal(m.module.state_dict()[k], v) for k, v in other.items())


@pytest.mark.parametrize("name, message", [
    ("scripted.pt", r"TorchScript module: blocklens reads layers with forward hooks, which ScriptModules do not "
                    r"run.*torch.export.*package.module:callable"),
    ("traced.pt", r"TorchScript"),
    ("pickled.pt", r"torch.save\(\) pickle .*--weights"),
    ("batch2.pt2", r"exported for batches of exactly 2.*dynamic_shapes"),
    ("missing.pt2", r"no model file '.*missing.pt2'"),
])
def test_file_errors(saved, name, message):
    _, d = saved
    with pytest.raises(BlocklensError, match=message):
        bl.load_model(str(d / name))


def test_torchscript_really_runs_no_hooks(saved):
    """Why TorchScript files are refused: ScriptModules refuse forward hooks (so no layer could be read)."""
    _, d = saved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(d / "scripted.pt"))
    with pytest.raises(RuntimeError, match="not supported on ScriptModules"):
        dict(scripted.named_modules())["0"].register_forward_hook(lambda *a: None)


# --------------------------------------------------------------------------------- timm, torchvision


@pytest.fixture
def fake_timm(monkeypatch):
    calls = []
    mod = types.ModuleType("timm")

    def create_model(name, pretrained=False, **kw):
        calls.append((name, pretrained, kw))
        if name not in ("tinynet", "tinynet_big"):
            raise RuntimeError(f"Unknown model ({name})")
        net = small_net(1000 if name == "tinynet_big" else 10)
        net.pretrained_cfg = {"input_size": (3, 40, 40), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
        return net

    mod.create_model = create_model
    mod.list_models = lambda *a, **k: ["tinynet", "tinynet_big", "resnet18"]
    monkeypatch.setitem(sys.modules, "timm", mod)
    return calls


@pytest.fixture
def fake_torchvision(monkeypatch):
    calls = []
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")

    def get_model(name, weights=None, **kw):
        calls.append((name, weights))
        return small_net(1000)

    models.get_model = get_model
    models.list_models = lambda *a, **k: ["resnet18", "resnet50", "vit_b_16"]
    tv.models = models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return calls


def test_timm_builds_without_download_and_warns_without_weights(fake_timm, tmp_path):
    with pytest.warns(RandomWeightsWarning, match="timm:tinynet has random weights"):
        m = bl.load_model("timm:tinynet")
    assert fake_timm == [("tinynet", False, {})]  # pretrained=False: nothing downloaded
    assert m.name == "timm:tinynet" and m.input_size == 40 and len(m.labels) == 10  # input size from its cfg
    assert torch.allclose(m.normalize(torch.full((1, 3, 1, 1), 0.75)), torch.ones(1, 3, 1, 1))  # its mean/std
    with pytest.warns(RandomWeightsWarning):
        assert bl.load_model("timm:tinynet").fingerprint == m.fingerprint  # the same random init each time
    torch.save({k: torch.randn_like(v) for k, v in m.module.state_dict().items()}, tmp_path / "w.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        w = bl.load_model("timm:tinynet", weights=tmp_path / "w.pth")
    assert w.fingerprint != m.fingerprint and w.weights == str(tmp_path / "w.pth")
    with pytest.warns(RandomWeightsWarning):
        assert bl.load_model("timm:tinynet_big").labels[281] == "tabby"
    with pytest.raises(BlocklensError, match=r"timm cannot build 'tinynett'.*closest: tinynet"):
        bl.load_model("timm:tinynett")
    with pytest.raises(BlocklensError, match="do not fit timm:tinynet_big"):
        bl.load_model("timm:tinynet_big", weights=tmp_path / "w.pth")


def test_torchvision_builds_without_download(fake_torchvision, tmp_path):
    with pytest.warns(RandomWeightsWarning, match="torchvision:resnet50 has random weights"):
        m = bl.load_model("torchvision:resnet50")
    assert fake_torchvision == [("resnet50", None)] and m.input_size == 224 and m.labels[0] == "tench"
    with pytest.raises(BlocklensError, match=r"torchvision has no model 'resnet5'; closest: resnet50"):
        bl.load_model("torchvision:resnet5")


@pytest.mark.parametrize("spec, message", [
    ("timm:resnet18", r"timm:resnet18 needs timm, which is not installed: pip install timm"),
    ("torchvision:resnet50", r"needs torchvision, which is not installed: pip install torchvision"),
])
def test_hubs_not_installed(monkeypatch, spec, message):
    monkeypatch.setitem(sys.modules, "timm", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(BlocklensError, match=message):
        bl.load_model(spec)


# ------------------------------------------------------------------------------------ command line


def test_cli_layers_and_classify_take_a_spec(user_pkg, capsys, tmp_path):
    assert main(["layers", "--model", "mypkg.nets:build", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "mypkg.nets:build" and out["input_size"] == 64 and out["layers"][0]["name"] == "0"
    net = bl.load_model("mypkg.nets:build").module
    torch.save({k: torch.randn_like(v) for k, v in net.state_dict().items()}, tmp_path / "w.pth")
    assert main(["classify", "dog", "-m", "mypkg.nets:build", "--weights", str(tmp_path / "w.pth"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "mypkg.nets:build"


def test_cli_warns_of_random_weights_in_one_line(fake_timm, capsys):
    assert main(["layers", "--model", "timm:tinynet", "--grep", "6"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("blocklens: warning: timm:tinynet has random weights") and err.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["layers", "--model", "mypkg.nets:nosuch"], "mypkg.nets has no attribute 'nosuch'"),
    (["classify", "dog", "--model", "nosuchpkg:build"], "no module named 'nosuchpkg'"),
    (["vis", "0:1", "--model", "model.pt2"], "no model file 'model.pt2'"),
    (["layers", "--model", "mypkg.nets:build", "--weights", "nope.pth"], "no weights file 'nope.pth'"),
    (["precompute", "--model", "mypkg.nets:returns_int", "--workers", "0"], "returned a int"),
])
def test_cli_spec_errors_are_one_line(user_pkg, capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("blocklens: error:") and message in err and err.count("\n") == 1, err


def test_models_help_describes_the_spec_forms(capsys):
    with pytest.raises(SystemExit):
        main(["models", "--help"])
    out = capsys.readouterr().out
    assert "mypkg.nets:build" in out and "timm:resnet50 --weights" in out and "TorchScript" in out
