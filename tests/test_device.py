"""Where models run: ``--device`` on every command that runs a model, one error line (exit 2) for a device that is
not here, before any work; ``resolve_device`` / ``to_device``, the one way a model is moved."""
import argparse

import numpy as np
import pytest
import torch

import blocklens.models
from blocklens.cli import build_parser, main
from blocklens.errors import BlocklensError
from blocklens.models import available_devices, resolve_device, to_device

#: Every command that runs a model, with the least it needs to parse.
MODEL_COMMANDS = {
    "layers": ["layers"],
    "classify": ["classify", "dog"],
    "vis": ["vis", "blocks.9:1"],
    "explain": ["explain", "dog"],
    "serve": ["serve"],
    "precompute": ["precompute", "--dry-run"],
    "index": ["index", "--bundled"],
    "atlas": ["atlas", "--bundled", "--layer", "blocks.11"],
    "concepts": ["concepts", "--bundled", "--class", "malamute"],
    "dictionary": ["dictionary", "--bundled"],
}

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no GPU")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = sub
                out.update({f"{name} {k}": v for k, v in _subcommands(sub).items()})
    return out


def test_every_command_that_loads_a_model_runs_it_on_device():
    """A command with --model has --device, except 'store export' (it reads the store; the model only names the
    icons' fingerprint): a new command that runs a model cannot forget it."""
    subs = _subcommands(build_parser())
    with_model = {name for name, p in subs.items() if any("--model" in a.option_strings for a in p._actions)}
    with_device = {name for name, p in subs.items() if any("--device" in a.option_strings for a in p._actions)}
    assert with_model - {"store export"} == set(MODEL_COMMANDS)
    assert with_device == set(MODEL_COMMANDS)


@pytest.mark.parametrize("command", list(MODEL_COMMANDS))
def test_device_flag_parses(command):
    parser = build_parser()
    argv = MODEL_COMMANDS[command]
    assert parser.parse_args(argv).device == "auto"
    assert parser.parse_args(argv + ["--device", "CUDA:1"]).device == "cuda:1"
    assert parser.parse_args(argv + ["--device", "cpu"]).device == "cpu"


def test_bad_device_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["classify", "dog", "--device", "gpu"])
    assert e.value.code == 2
    assert "device must be auto" in capsys.readouterr().err


@no_gpu
@pytest.mark.parametrize("command", list(MODEL_COMMANDS))
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_error_line_before_any_work(command, device, capsys, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("a model was loaded although the device is not here")

    monkeypatch.setattr(blocklens.models, "load_model", no_model)
    code = main(MODEL_COMMANDS[command] + ["--device", device])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("blocklens: error: ")
    assert f"device {device!r} was asked for" in err and "available: cpu" in err


@no_gpu
def test_with_ray_the_device_is_the_workers():
    """--ray: the driver need not have the workers' GPU, so its absence here is no error."""
    from blocklens.cli.args import check_device

    check_device(argparse.Namespace(device="cuda", ray="auto"))
    with pytest.raises(BlocklensError, match="'cuda' was asked for"):
        check_device(argparse.Namespace(device="cuda", ray=None))


def test_device_cpu_runs(capsys):
    code = main(["classify", "chelsea", "--device", "cpu", "--top", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert '"tiger cat"' in out


def test_resolve_device():
    assert resolve_device("auto") == resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(" CPU ") == "cpu" and resolve_device(torch.device("cpu")) == "cpu"
    assert available_devices()[0] == "cpu"
    with pytest.raises(BlocklensError, match="device must be auto .* got 'tpu'"):
        resolve_device("tpu")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(BlocklensError, match=f"'cuda:{n}' was asked for"):
        resolve_device(f"cuda:{n}")


@no_gpu
def test_library_entry_points_refuse_a_missing_gpu():
    from blocklens.app.models import ModelPool
    from blocklens.jobs import local_devices

    with pytest.raises(BlocklensError, match="'cuda' was asked for"):
        blocklens.models.load_model("efficientnet_lite0", device="cuda")
    with pytest.raises(BlocklensError, match="'cuda' was asked for"):
        ModelPool(device="cuda")
    with pytest.raises(BlocklensError, match="'cuda' was asked for"):
        local_devices("cuda", 2)
    assert local_devices("auto", 2) == ["cpu", "cpu"]


def test_to_device_moves_the_module(lite0):
    assert to_device(lite0, "cpu") is lite0 and lite0.device.type == "cpu"


# -- mixed precision: an opt-in recipe option for icons ---------------------------------------------------------
def test_amp_icons_are_their_own_recipe(lite0):
    """``amp="bf16"`` renders under autocast, reports itself in the recipe and so gets its own key; without it
    the recipe (and every existing key) is unchanged; an unknown mode fails before any work."""
    from blocklens.iconcache import icon_key_for
    from blocklens.optvis.render import render
    from blocklens.optvis.targets import parse_target
    from blocklens.recipes import recipe_for

    tiny = dict(size=32, steps=3, same_init=True, progress=False)
    plain = render(lite0, ["blocks.7:3"], **tiny)
    half = render(lite0, ["blocks.7:3"], amp="bf16", **tiny)
    assert "amp" not in plain.recipe and half.recipe["amp"] == "bf16"
    assert half.images.dtype == np.float32 and np.isfinite(half.history).all()
    assert not np.array_equal(plain.images, half.images)  # the model really ran in bfloat16
    t = parse_target(lite0, "blocks.7:3")
    assert icon_key_for(lite0, t, recipe_for(size=32, steps=3)) != icon_key_for(lite0, t, recipe_for(size=32, steps=3, amp="bf16"))
    assert "amp" not in recipe_for(size=32)
    with pytest.raises(BlocklensError, match="amp must be None or one of bf16, got 'fp8'"):
        render(lite0, ["blocks.7:3"], amp="fp8", **tiny)


def test_amp_flag_reaches_the_recipe():
    from blocklens.cli.args import recipe_args

    args = build_parser().parse_args(["precompute", "--amp", "bf16", "--dry-run"])
    assert recipe_args(args, "device")["amp"] == "bf16"
    assert build_parser().parse_args(["vis", "blocks.7:1", "--amp", "bf16"]).amp == "bf16"
