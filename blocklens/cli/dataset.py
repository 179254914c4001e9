"""Command line for many images: ``index`` (a folder's activation index), ``atlas`` and ``concepts`` (a class's concepts)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import BlocklensError
from .args import (add_device, add_icon_options, add_model, add_store, icon_recipe, load_model_arg, nonneg_int,
                   open_store, positive_int, stderr_log)

INDEX_EXAMPLES = """\
examples:
  blocklens index --bundled                              the bundled photos, the report's layers
  blocklens index ~/imagenet/val --layers blocks.11 --workers 2
  blocklens index /data/val --store s3://bucket/blocklens --ray auto
  blocklens index photos/ --json                         the finished index's summary as JSON

A run that is stopped (Ctrl-C, kill -9) resumes where it stopped when started again: every finished chunk of
images is a shard in the store. The index is keyed by the model's weights, the layers, the options and the
folder's content (every file's path and sha256): a changed file makes a new index.
"""

ATLAS_EXAMPLES = """\
examples:
  blocklens atlas --bundled --layer blocks.11 --out atlas.html
  blocklens atlas ~/imagenet/val --layer blocks.11 --grid 20 --preset default --png atlas.png
"""


CONCEPTS_EXAMPLES = """\
examples:
  blocklens concepts photos/ --class malamute                 photos/ holds one subfolder per class (or any images)
  blocklens concepts photos/ --class malamute --vs "German shepherd" --out dogs.html
  blocklens concepts --bundled --class "Border collie" --layer blocks.11 --k 5 --json
"""


def add_source(p: argparse.ArgumentParser) -> None:
    """FOLDER, --bundled or --index KEY: the images of a folder job (:func:`source_arg` reads them)."""
    p.add_argument("folder", nargs="?", metavar="FOLDER", help="a folder of images (subfolders included)")
    p.add_argument("--bundled", action="store_true", help="the photos that ship with blocklens")
    p.add_argument("--index", metavar="KEY", help="the folder of an index from 'blocklens index' (instead of FOLDER)")


def add_chunk_runner(p: argparse.ArgumentParser, device_more: str = "") -> None:
    """Where a folder job's chunks run: --workers, --threads, --device, --ray, --gpus-per-task
    (:func:`runner_args` reads them)."""
    p.add_argument("--workers", type=nonneg_int, default=0, help="local worker processes (default 0: this process)")
    p.add_argument("--threads", type=positive_int, help="torch threads per worker (default: CPU cores / workers)")
    add_device(p, "; local worker i gets GPU i mod count" + device_more)
    p.add_argument("--ray", metavar="ADDRESS", help="run the chunks as Ray tasks (pip install 'blocklens[ray]'): "
                   "auto, ray://HOST:10001, HOST:6379, or local")
    p.add_argument("--gpus-per-task", type=float, default=0, metavar="N", help="GPUs Ray reserves per chunk "
                   "(default 0; 1 with --device cuda)")


def runner_args(args) -> dict:
    """The options of :func:`add_chunk_runner` as keyword arguments of a folder job (defaults where a command
    lacks them)."""
    return {"workers": getattr(args, "workers", 0), "threads": getattr(args, "threads", None),
            "device": getattr(args, "device", None), "ray": getattr(args, "ray", None),
            "gpus_per_task": getattr(args, "gpus_per_task", 0) or 0}


def source_arg(args):
    """An index key, or the folder of :func:`folder_arg`; never several."""
    if args.index and (args.folder or args.bundled):
        raise BlocklensError("give a FOLDER, --bundled or --index, not several")
    return args.index or folder_arg(args)


def folder_arg(args) -> Path:
    from ..images import BUNDLED_DIR

    if getattr(args, "bundled", False):
        if args.folder:
            raise BlocklensError("give a FOLDER or --bundled, not both")
        return BUNDLED_DIR
    if not args.folder:
        raise BlocklensError("which images? give a FOLDER, or --bundled for the photos that ship with blocklens")
    return Path(args.folder)


def _add_index_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", metavar="FOLDER", help="a folder of images (subfolders included)")
    p.add_argument("--bundled", action="store_true", help="the photos that ship with blocklens "
                   "(blocklens/data/images)")
    p.add_argument("--k", type=positive_int, default=16, help="top (and bottom) images kept per unit (default 16)")
    p.add_argument("--samples", type=nonneg_int, default=1, help="random positions per image kept for the atlas "
                   "(default 1, as in the article)")
    p.add_argument("--classes", type=nonneg_int, default=5, help="top predicted classes whose attribution each "
                   "sample records (default 5; 0: none, faster)")
    p.add_argument("--index-seed", type=int, default=0, help="seed of the sampled positions (default 0)")
    p.add_argument("--chunk", type=positive_int, default=32, help="images per shard (default 32)")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "index", help="index a folder of images: each unit's top images and samples for the atlas",
        description="Run the model over every image of FOLDER and record, per layer and unit, the top-k images "
                    "by the unit's spatial maximum (with its position, for patches at the receptive field), the "
                    "bottom-k for signed layers, and a random sample of positions' activation vectors (with "
                    "their attribution to each image's top classes) for the activation atlas. Unreadable files "
                    "are skipped with their reasons. The index lives in the store, next to the icons.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=INDEX_EXAMPLES)
    _add_index_options(p)
    add_model(p)
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="layers to index (default: the report's layers)")
    add_store(p)
    add_chunk_runner(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the finished index's summary as JSON")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser(
        "atlas", help="an activation atlas of one layer over an indexed folder (HTML, PNG)",
        description="UMAP (cosine) of the index's sampled activation vectors of LAYER, binned into a grid; each "
                    "cell's mean activation, whitened, is rendered as a direction icon (through the icon store), "
                    "and each cell's class evidence is the mean over its samples of their linear attribution to "
                    "their images' top classes. Indexes the folder first if needed (needs umap-learn: pip "
                    "install 'blocklens[atlas]').",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ATLAS_EXAMPLES)
    _add_index_options(p)
    add_model(p)
    add_device(p)
    p.add_argument("--layer", required=True, metavar="LAYER", help="the layer to map")
    p.add_argument("--index", metavar="KEY", help="an index key from 'blocklens index' (instead of FOLDER)")
    p.add_argument("--grid", type=positive_int, default=20, help="cells per side (default 20)")
    p.add_argument("--min-points", type=positive_int, default=3, help="cells with fewer samples are dropped "
                   "(default 3)")
    p.add_argument("--n-neighbors", type=positive_int, default=20, help="UMAP n_neighbors (default 20)")
    p.add_argument("--min-dist", type=float, default=0.05, help="UMAP min_dist (default 0.05)")
    add_icon_options(p, "no icons (the layout and class evidence only)")
    add_store(p)
    p.add_argument("--out", default="atlas.html", metavar="FILE", help="the self-contained HTML page "
                   "(default atlas.html)")
    p.add_argument("--png", metavar="FILE", help="also a PNG of the atlas's icons on their grid")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the atlas as JSON")
    p.set_defaults(func=cmd_atlas)

    p = sub.add_parser(
        "concepts", help="the concepts a model relies on for one class across a folder, and where they sit",
        description="Factorize (NMF) the activations of one class's images at a layer into concepts; rank them by "
                    "the mean drop of the class's probability when each concept's share is removed (its "
                    "log-probability drop beside it), with the share of predictions it flips; show each as a direction icon with its top patches and maps, "
                    "and audit where it sits (fixed place, border, other classes). FOLDER with one subfolder per "
                    "class gives labels; otherwise the model's predictions do. With --vs, also the channels that "
                    "carry the most evidence for one class over the other across both classes' images.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CONCEPTS_EXAMPLES)
    add_source(p)
    add_model(p)
    add_device(p, "; local worker i gets GPU i mod count")
    p.add_argument("--class", dest="cls", required=True, metavar="NAME", help="the class (a name or an index)")
    p.add_argument("--vs", metavar="NAME", help="a second class: the pair's vocabulary, and each concept's effect "
                   "on the pair")
    p.add_argument("--layer", metavar="LAYER", help="a layer with positions (default: the report's deeper layer)")
    p.add_argument("--k", type=positive_int, help="the number of concepts (default: the largest of 2..8 whose "
                   "concepts all reappear on resampled images)")
    p.add_argument("--positions", type=positive_int, default=16, help="positions sampled per class image for the "
                   "factorization (default 16)")
    p.add_argument("--max-images", type=positive_int, default=1000, help="the most images scanned (default 1000): "
                   "an error before any work when the folder needs more")
    p.add_argument("--examples", type=positive_int, default=8, help="top patches per concept (default 8)")
    p.add_argument("--workers", type=nonneg_int, default=0, help="local worker processes (default 0: this process)")
    add_icon_options(p, "no icons (the numbers, patches and maps only)")
    add_store(p)
    p.add_argument("--out", metavar="FILE", help="the self-contained HTML report (default CLASS.concepts.html)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the concepts as JSON (no pictures)")
    p.set_defaults(func=cmd_concepts)


def index_from_args(args, layers, model=None):
    """Build (or load) the index that FOLDER/--bundled and the index options name."""
    from ..dataset.index import build_index

    return build_index(folder_arg(args), model if model is not None else args.model, layers,
                       store=open_store(args), k=args.k, samples=args.samples, seed=args.index_seed,
                       classes=args.classes, chunk=args.chunk, **runner_args(args),
                       progress=False if args.no_progress else None,
                       weights=args.weights, log=stderr_log(args))


def cmd_index(args) -> int:
    idx = index_from_args(args, args.layers)
    if args.json:
        print(json.dumps(dict(idx.to_json(), skipped_files=idx.skipped), indent=2))
    else:
        print(f"index {idx.key}: {idx.count} of {len(idx.images)} images of {idx.folder}, layers "
              f"{', '.join(idx.layers)}, in {idx.store.url}")
        if idx.skipped:
            print(f"skipped {len(idx.skipped)} unreadable file(s):")
            for path, why in sorted(idx.skipped.items()):
                print(f"  {path}: {why}")
    return 0


def cmd_atlas(args) -> int:
    from ..dataset.atlas import activation_atlas
    from ..dataset.index import load_index

    model = load_model_arg(args, renders=True)
    layer = model.layer(args.layer).name
    if args.index:
        idx = load_index(args.index, store=open_store(args))
    else:  # an index of the folder with this layer and the same sampling (other layers, any k), else a new one
        try:
            idx = load_index(folder_arg(args), model, None, store=open_store(args), _need=[layer])
            o = idx.manifest["options"]
            if (o["samples"], o["classes"], o["seed"]) != (args.samples, args.classes, args.index_seed):
                raise BlocklensError("that index sampled differently")
        except BlocklensError:
            idx = index_from_args(args, [layer], model=model)
    recipe = icon_recipe(args, model)
    atlas = activation_atlas(model, layer, idx, grid=args.grid, min_points=args.min_points,
                             n_neighbors=args.n_neighbors, min_dist=args.min_dist, icons=not args.no_icons,
                             store=open_store(args), progress=False if args.no_progress else None, **recipe)
    out = atlas.save_html(args.out)
    if args.png:
        atlas.to_pil().save(args.png)
    if args.json:
        print(json.dumps(atlas.to_json(images=False), indent=2))
    else:
        print(f"{out}  atlas of {layer}: {len(atlas.cells)} cells from {atlas.points} samples of index {idx.key}")
        if args.png:
            print(f"{args.png}  its icons on the grid")
    return 0


def cmd_concepts(args) -> int:
    import re

    from ..dataset.concepts import class_concepts

    model = load_model_arg(args, renders=not args.no_icons)
    source = source_arg(args)
    recipe = icon_recipe(args, model)
    result = class_concepts(model, source, args.cls, args.layer, args.k, vs=args.vs, store=open_store(args),
                            icons=not args.no_icons, positions=args.positions, max_images=args.max_images,
                            examples=args.examples, workers=args.workers, device=args.device,
                            progress=False if args.no_progress else None, log=stderr_log(args), **recipe)
    out = Path(args.out or re.sub(r"[^A-Za-z0-9._-]+", "_", result.label) + ".concepts.html")
    result.save_html(out)
    if args.json:
        print(json.dumps(result.to_json(images=False), indent=2))
        return 0
    print(f"{result.label} at {result.layer}: {len(result.images)} images ({result.labels_from}), "
          f"k = {result.k}; {result.method}")
    for line in result.summary():
        print("  " + line)
    if result.vocabulary:
        v = result.vocabulary
        for side, who in (("for", v["a_label"]), ("against", v["b_label"])):
            chans = [c for c in v["channels"] if c["side"] == side]
            print(f"  {who} over {v['b_label'] if side == 'for' else v['a_label']}: channels "
                  + ", ".join(f"{c['channel']} ({c['evidence']:+.2f})" for c in chans))
    print(f"report: {out}")
    return 0
