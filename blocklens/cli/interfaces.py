"""Command line for the interfaces: ``explain`` (the self-contained HTML report) and ``serve`` (the web app)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import BlocklensError
from .args import add_device, add_model, load_model_arg, resolve_image_arg

EXPLAIN_EPILOG = """\
examples:
  blocklens explain dog                          a bundled photo, quick preset, writes dog.blocklens.html
  blocklens explain cat.jpg --out cat.html --classes "tiger cat,tabby"
  blocklens explain dog --layers blocks.5,blocks.9,blocks.13 --preset default   reference icons (slow on a CPU)
  blocklens explain dog --json                   the numbers as JSON on stdout (and the report)
  blocklens explain dog --dictionary KEY         also the image in a concept dictionary's atoms (its key from
                                                 'blocklens dictionary FOLDER')
"""

SERVE_EPILOG = """\
examples:
  blocklens serve                                http://127.0.0.1:8000, quick icons
  blocklens serve --port 8765 --preset default --store /data/icons
  blocklens serve --model mypkg.nets:build --model timm:resnet50 --weights r50.pth    your models in the picker
"""


def add_commands(sub) -> None:
    """Add ``explain`` and ``serve`` to the ``blocklens`` parser's ``sub``."""
    from ..recipes import PRESETS, presets_help

    p = sub.add_parser(
        "explain", help="every building block for one image, as a self-contained HTML report",
        description="Explain one image: top classes, the channels that decide between two of them, the semantic "
                    "dictionary, activation grids, spatial attribution and neuron groups, in one HTML file with "
                    "data and pictures inline (opens from file://, needs no network). IMAGE is a path or a "
                    "bundled photo (chelsea, coffee, dog, collies, giraffe, multiple_dogs). Icons come from the "
                    "icon store and are rendered only where missing: a second run is seconds.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXPLAIN_EPILOG)
    p.add_argument("image", metavar="IMAGE")
    add_model(p)
    add_device(p, " (which also picks the preset when none is given)")
    p.add_argument("--layers", "-l", metavar="L1,L2", help="spatial layers, comma-separated, in any order "
                   "(default: two per model; 'blocklens layers' lists them)")
    p.add_argument("--classes", "-c", metavar="A,B", help="classes to explain (names or indices, comma-separated); "
                   "the first two are contrasted (default: the top 5 predictions)")
    p.add_argument("--out", "-o", metavar="FILE.html", help="where to write the report (default IMAGE_NAME.blocklens.html)")
    p.add_argument("--examples", metavar="FOLDER_OR_INDEX", help="dataset examples: hovering (or clicking) a channel's "
                   "icon shows its top patches over this folder of images (indexed first if needed) or index key. "
                   "Default: the newest index of this model in the store, when there is one")
    p.add_argument("--no-examples", action="store_true", help="no dataset examples, even when the store holds an index")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help=f"icon recipe: {presets_help()}. The reference pack shipped with blocklens holds the embedded "
                        "model's default layers at the default preset, so their channel icons come from it. "
                        "Default: quick when the model is on a CPU, default on a GPU")
    p.add_argument("--groups", type=int, default=6, metavar="K", help="neuron groups shown first (default 6)")
    p.add_argument("--store", metavar="DIR", help="icon store (default $BLOCKLENS_CACHE or ~/.cache/blocklens)")
    p.add_argument("--folder", metavar="DIR", help="also write explanation.json, image.png and icons/*.png here")
    p.add_argument("--json", action="store_true", help="print the explanation's numbers as JSON on stdout")
    p.add_argument("--cached-only", action="store_true",
                   help="render nothing: take icons and grids only from the store; the views show the rest as "
                        "not rendered (the numbers in seconds, e.g. for a large model on a CPU)")
    p.add_argument("--dictionary", "-d", metavar="KEY", help="a concept dictionary of this model in the store (the key "
                   "'blocklens dictionary FOLDER' prints): the report adds, at its layer, the atoms at each position, "
                   "attribution to atoms for the top classes with the residual, and a removal check")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "serve", help="the local web app",
        description="Serve the interactive views on this computer: pick a model and layers, choose a bundled "
                    "photo or upload one; every hover is answered in the page. Icons not yet in the store are "
                    "rendered in the background with progress. Binds 127.0.0.1 unless --host says otherwise.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SERVE_EPILOG)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this computer only; "
                   "0.0.0.0 exposes the app to your network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="icon recipe (default: quick on a CPU, default on a GPU; see 'blocklens explain --help')")
    p.add_argument("--store", metavar="DIR", help="icon store (default $BLOCKLENS_CACHE or ~/.cache/blocklens)")
    p.add_argument("--max-upload-mb", type=int, default=16, metavar="MB", help="upload size cap (default 16)")
    p.add_argument("--model", "-m", action=_AddModel, dest="models", default=[], metavar="SPEC",
                   help="add your model to the app's model picker, next to the zoo (repeatable): "
                        "package.module:callable, a torch.export file (model.pt2), timm:NAME or torchvision:NAME; "
                        "it loads at start, so a bad spec fails at once. 'blocklens models --help' describes the forms")
    p.add_argument("--weights", "-w", action=_AddWeights, dest="models", metavar="FILE",
                   help="a state dict (.pth/.pt or .safetensors) for the --model just before it")
    add_device(p, " (every model the app loads; it also picks the preset when none is given)")
    p.set_defaults(func=cmd_serve)


class _AddModel(argparse.Action):
    """``--model SPEC``: one more (spec, weights) pair for the app."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(getattr(namespace, self.dest) or []) + [(values, None)])


class _AddWeights(argparse.Action):
    """``--weights FILE``: the weights of the ``--model`` given just before."""

    def __call__(self, parser, namespace, values, option_string=None):
        models = list(getattr(namespace, self.dest) or [])
        if not models:
            parser.error("--weights FILE goes after the --model SPEC it belongs to")
        if models[-1][1] is not None:
            parser.error(f"--model {models[-1][0]} already has --weights {models[-1][1]}")
        models[-1] = (models[-1][0], values)
        setattr(namespace, self.dest, models)


def _split(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def default_out(image: str) -> Path:
    return Path(f"{Path(image).stem or 'image'}.blocklens.html")


def cmd_explain(args) -> int:
    import time

    from ..explain import explain
    from ..images import bundled_images, load_image
    from ..store import IconStore

    source = args.image
    path = resolve_image_arg(source)
    if not path.exists():
        raise BlocklensError(f"no file {source!r}, and it is not a bundled photo "
                             f"({', '.join(bundled_images())})")
    image = load_image(path)
    out = Path(args.out) if args.out else default_out(source)
    if out.suffix.lower() not in (".html", ".htm"):
        raise BlocklensError(f"--out {str(out)!r}: the report is HTML; give a name ending in .html")
    model = load_model_arg(args, renders=not args.quiet)
    t0 = time.perf_counter()
    progress = False if args.quiet else None
    from ..recipes import default_preset

    preset = args.preset or default_preset(model)
    if not args.quiet:
        how = "only from the store" if args.cached_only else "from the store or are rendered now"
        chosen = "" if args.preset else f", chosen for the {model.device.type.upper()}"
        print(f"explaining {path.name} with {model.name} ({preset} preset{chosen}); icons come {how}",
              file=sys.stderr)
    pictures = "cached" if args.cached_only else True
    result = explain(image, model=model, layers=_split(args.layers), classes=_split(args.classes),
                     n_groups=args.groups, preset=preset, store=args.store, progress=progress,
                     icons=pictures, grids=pictures, dictionary=getattr(args, "dictionary", None))
    examples, examples_note = None, None
    if getattr(args, "examples", None):
        from ..dataset.index import index_for, load_index
        from ..dataset.examples import examples_data, examples_line

        layers = [lr.layer for lr in result.layers]
        src = Path(args.examples)
        index = (index_for(src, model, layers, store=args.store, progress=progress) if src.is_dir()
                 else load_index(args.examples, store=args.store))
        examples, examples_note = examples_data(model, result, index), examples_line(index)
    elif not getattr(args, "no_examples", False):
        from ..dataset.examples import default_examples

        examples, examples_note = default_examples(model, result, args.store)
    result.save_html(out, store=IconStore(args.store), examples=examples,  # sprite sheets from a precompute, if any
                     examples_note=examples_note)
    if args.folder:
        result.save(args.folder)
    elapsed = time.perf_counter() - t0
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        for p in result.predictions[:5]:
            print(f"{p['prob']:6.1%}  {p['label']}")
        rendered = result.timings.get("icons", 0) + result.timings.get("grids", 0)
        print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB, {len(result.icons)} icons, layers "
              f"{', '.join(l.layer for l in result.layers)}) in {elapsed:.1f} s"
              f" ({rendered:.1f} s of it rendering pictures)")
        print(result.note)
        if examples_note:
            print(examples_note)
        for layer, q in result.quality.items():
            print(f"  {layer}: {q['line']}")
        if result.atoms is not None:
            print(atoms_line(result))
        print(f"open it in a browser: file://{out.resolve()}")
    return 0


def atoms_line(result) -> str:
    """One line on the atoms section: the top class's top atom, the residual, and the removal check."""
    a, c = result.atoms, result.atoms.removal[0]
    (best, value), = a.ranked(c["class"])[:1]
    rc = "n/a" if c["rank_correlation"] is None else f"{c['rank_correlation']:.2f}"
    return (f"  atoms of {a.key} at {a.layer}: for {c['label']}, atom {best} carries {value:+.2f} of "
            f"{a.whole[0]:+.2f} ({a.score}; residual {a.residual[0]:+.2f}); removing its top {len(c['together'])} "
            f"atoms takes it from {100 * c['prob']:.0f}% to {100 * c['prob_without']:.0f}%; predicted vs measured "
            f"drops of {len(c['atoms'])} atoms: rank correlation {rc}")


def cmd_serve(args) -> int:
    from ..app import BlocklensApp, serve

    if not 0 < args.port < 65536:
        raise BlocklensError(f"--port {args.port} is not a port number (1-65535)")
    if args.max_upload_mb < 1:
        raise BlocklensError(f"--max-upload-mb must be at least 1, got {args.max_upload_mb}")
    import importlib.util

    for need in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(need) is None:
            raise BlocklensError(f"the web app needs {need}: pip install {need} (a blocklens dependency)")
    state = BlocklensApp(store=args.store, preset=args.preset, max_upload_bytes=args.max_upload_mb * 1024 * 1024,
                         models=args.models, device=args.device)
    for spec in state.specs:  # the user's models load now: a bad spec fails here, not in the page
        state.model(spec)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"blocklens: warning: serving on {args.host}: anyone who can reach this address can use the app",
              file=sys.stderr)
    print(f"blocklens: open http://{'127.0.0.1' if args.host == '0.0.0.0' else args.host}:{args.port}/ "
          "(Ctrl-C stops)", file=sys.stderr)
    serve(host=args.host, port=args.port, state=state)
    return 0
