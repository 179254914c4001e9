"""Options and helpers every command family shares: the model, the store, the icon recipe, integers, images, logs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import BlocklensError

MODEL_HELP = ("the model: a zoo name (default {default}; 'blocklens models' lists them), package.module:callable "
              "(a function or class returning an nn.Module or bl.Model; the current directory is importable), "
              "a torch.export file (model.pt2), timm:NAME or torchvision:NAME")
WEIGHTS_HELP = ("a state dict (.pth/.pt via torch.load(weights_only=True), or .safetensors) loaded into the model; "
                "timm:/torchvision: models without it have random weights")


def add_model(p: argparse.ArgumentParser) -> None:
    from ..models import DEFAULT_MODEL

    p.add_argument("--model", "-m", default=DEFAULT_MODEL, metavar="SPEC", help=MODEL_HELP.format(default=DEFAULT_MODEL))
    p.add_argument("--weights", "-w", metavar="FILE", help=WEIGHTS_HELP)


def device_name(text: str) -> str:
    """An argparse type: a device name of the forms ``--device`` takes (whether it is here is checked by
    :func:`check_device`, as a ``blocklens: error:`` line)."""
    from ..models.devices import check_device_name

    try:
        return check_device_name(text)
    except BlocklensError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_device(p: argparse.ArgumentParser, more: str = "") -> None:
    """``--device`` of a command that runs a model (``more``: what else the command does with it)."""
    from ..models.devices import DEVICE_FORMS

    p.add_argument("--device", type=device_name, default="auto", metavar="DEVICE",
                   help=f"where the model runs: {DEVICE_FORMS}; default auto{more}")


def check_device(args) -> None:
    """Before any work: the ``--device`` asked for must be here (one error naming it and what is available),
    except with ``--ray``, where it is the workers' device, not this machine's."""
    device = getattr(args, "device", None)
    if device is not None and not getattr(args, "ray", None):
        from ..models.devices import resolve_device

        resolve_device(device)


def load_model_arg(args, renders: bool = False):
    """The model that ``--model`` and ``--weights`` name, on ``--device`` (the CPU for a command without it);
    with ``renders``, a model that takes only its own input size gets a note on stderr that feature
    visualizations are resized to it."""
    from ..models import load_model

    model = load_model(args.model, weights=getattr(args, "weights", None), device=getattr(args, "device", None)
                       or "cpu")
    if renders and model.fixed_size:
        print(f"blocklens: note: {model.name} accepts only {model.input_size}x{model.input_size} inputs; feature "
              f"visualizations are optimized at their own size and resized to {model.input_size} px for it",
              file=sys.stderr)
    return model


def int_at_least(low: int, words: str):
    """An argparse type: an integer >= ``low`` (``words`` says the bound in the error)."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be {words}, got {v}")
        return v

    return parse


positive_int = int_at_least(1, "at least 1")
nonneg_int = int_at_least(0, "0 or more")


def resolve_image_arg(arg: str) -> Path:
    """A path as given, or a bundled photo's path when no such file exists and the name is bundled."""
    from ..images import bundled_images

    path = Path(arg)
    if not path.exists():
        bundled = bundled_images()
        if path.stem in bundled and path.parent == Path("."):
            return bundled[path.stem]
    return path


def add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR_OR_URL", help="icon store: a folder or an fsspec URL (s3://, gs://, "
                   "az://, sftp://...; object stores need their package: s3fs, gcsfs, adlfs). Default: "
                   "$BLOCKLENS_CACHE or ~/.cache/blocklens")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec options for the store's file system, as a "
                   "JSON object (credentials, endpoint_url, ...)")


def add_recipe(p: argparse.ArgumentParser, default_preset: str | None) -> None:
    from ..recipes import PRESETS, presets_help

    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="the icon recipe: " + presets_help() + (" (default: quick on a CPU, default where CUDA is "
                                                                 "available)" if default_preset == "device" else ""))
    p.add_argument("--size", type=positive_int, help="image size in pixels (overrides the preset)")
    p.add_argument("--steps", type=positive_int, help="optimization steps (overrides the preset)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    add_amp(p)


def add_amp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", choices=["bf16"], help="render in bfloat16 mixed precision (a GPU's option: its icons "
                   "drive their units as strongly as float32 ones, but are other images, so they get their own key; "
                   "not faster on a CPU without bf16 units)")


def add_icon_options(p: argparse.ArgumentParser, no_icons: str) -> None:
    """``--preset``, ``--size``, ``--steps`` and ``--no-icons`` (whose help is ``no_icons``) of a command whose
    results carry icons; :func:`icon_recipe` reads them."""
    from ..recipes import PRESETS, presets_help

    p.add_argument("--preset", choices=list(PRESETS), default=None, help=f"icon recipe ({presets_help()}); "
                   "default: quick on a CPU, default on a GPU")
    p.add_argument("--size", type=positive_int, help="icon size (overrides the preset)")
    p.add_argument("--steps", type=positive_int, help="icon steps (overrides the preset)")
    p.add_argument("--no-icons", action="store_true", help=no_icons)


def icon_recipe(args, model) -> dict:
    """The icon recipe of :func:`add_icon_options`' flags: the preset (by the model's device when none is given)
    with ``--size`` / ``--steps`` over it."""
    from ..recipes import preset_options

    return preset_options(args.preset, "icons", model, size=args.size, steps=args.steps)


def open_store(args):
    from ..store import IconStore

    options = None
    if getattr(args, "storage_options", None):
        try:
            options = json.loads(args.storage_options)
        except ValueError as e:
            raise BlocklensError(f"--storage-options is not valid JSON: {e}") from None
        if not isinstance(options, dict):
            raise BlocklensError("--storage-options must be a JSON object, e.g. '{\"anon\": true}'")
    return IconStore(args.store, storage_options=options)


def recipe_args(args, default_preset: str | None) -> dict | None:
    """Recipe overrides from --preset/--size/--steps/--seed; None when none was given and there is no default."""
    from ..recipes import preset_options

    preset = args.preset or default_preset
    amp = getattr(args, "amp", None)
    if preset is None and args.size is None and args.steps is None and args.seed is None and amp is None:
        return None
    return preset_options(None if preset == "device" else preset, "icons", size=args.size, steps=args.steps,
                          seed=args.seed, amp=amp)  # preset None: the device's


def print_help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 0


def stderr_log(args):
    quiet = args.json and not sys.stderr.isatty()

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)
    return log
