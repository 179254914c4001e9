"""Command line for the concept dictionary: ``dictionary`` (atoms learned over a folder, the classes each drives)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import (add_icon_options, add_model, add_store, icon_recipe, load_model_arg, open_store, positive_int,
                   stderr_log)
from .dataset import add_chunk_runner, add_source, runner_args, source_arg

DICTIONARY_EXAMPLES = """\
examples:
  blocklens dictionary photos/                               32 NMF atoms at the default layer, dictionary.html
  blocklens dictionary photos/ --class malamute              which atoms decided "malamute" across the folder
  blocklens dictionary ~/imagenet/val --method sae --atoms 128 --workers 2
  blocklens dictionary --index 0123456789abcdef --json       the folder of an index; the result as JSON

No labels are needed: every position of the layer over every image is used. A stopped run resumes: the collected
activations, the trained atoms and the removals are kept in the store. The dictionary is saved there too, under
the key printed at the end (blocklens explain IMAGE --dictionary KEY).
"""


def add_commands(sub) -> None:
    p = sub.add_parser(
        "dictionary", help="a dictionary of concepts learned over a folder, and the classes each concept drives",
        description="Learn atoms (directions) over every position of a layer across a folder (online NMF, or a TopK "
                    "sparse autoencoder), without labels; show each atom as an icon with its top patches, the "
                    "classes it drives (the mean drop of every class's logit when its share is removed on the "
                    "images where it fires) and flags (a cue that raises a class on images of other classes, "
                    "decisive, at a fixed place); and the dictionary's quality beside a PCA and the channels.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DICTIONARY_EXAMPLES)
    add_source(p)
    add_model(p)
    p.add_argument("--layer", metavar="LAYER", help="a layer with positions (default: the report's deeper layer)")
    p.add_argument("--atoms", type=positive_int, help="the number of atoms (default 32)")
    p.add_argument("--method", choices=["nmf", "sae"], default="nmf", help="online NMF (default) or a TopK sparse "
                   "autoencoder")
    p.add_argument("--top", type=positive_int, help="sae: non-zero codes per position (default atoms / 8)")
    p.add_argument("--epochs", type=positive_int, help="passes over the positions (default: enough for 200 NMF "
                   "or 3000 SAE updates, at least 4 / 10)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--no-stability", action="store_true", help="skip the second fit that measures stability")
    p.add_argument("--class", dest="cls", metavar="NAME", help="rank the atoms by how much each drives this class")
    p.add_argument("--examples", type=positive_int, default=8, help="top patches per atom (default 8)")
    p.add_argument("--readability", action="store_true", help="also score how readable the atoms and the layer's "
                   "channels are: two-alternative trials judged by the model's penultimate features (minutes: "
                   "every unit's top, bottom and random patches are run through the model)")
    add_chunk_runner(p, "; the dictionary trains there too")
    add_icon_options(p, "no icons (the numbers and patches only)")
    add_store(p)
    p.add_argument("--out", metavar="FILE", default="dictionary.html", help="the self-contained HTML report "
                   "(default dictionary.html)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the dictionary as JSON (no pictures)")
    p.set_defaults(func=cmd_dictionary)


def cmd_dictionary(args) -> int:
    from ..dataset.dictionary import concept_dictionary

    model = load_model_arg(args, renders=not args.no_icons)
    source = source_arg(args)
    if args.cls is not None:
        model.class_index(args.cls)  # an unknown class fails before any work
    recipe = icon_recipe(args, model)
    d = concept_dictionary(model, source, args.layer, args.atoms, args.method, epochs=args.epochs, top=args.top,
                           seed=args.seed, stability=not args.no_stability, examples=args.examples,
                           readability=args.readability,
                           icons=not args.no_icons, store=open_store(args), **runner_args(args),
                           progress=False if args.no_progress else None, log=stderr_log(args), **recipe)
    out = d.save_html(Path(args.out))
    ranked = d.for_class(args.cls) if args.cls is not None else None
    if args.json:
        data = d.to_json(images=False)
        if ranked is not None:
            data["for_class"] = {"class": args.cls, "atoms": [{"atom": a.index, "prob_drop": v} for a, v in ranked]}
        print(json.dumps(data, indent=2))
        return 0
    for line in d.summary():
        print(line)
    if ranked is not None:
        print(f"atoms that drive {d.labels[d.class_index(args.cls)]!r} most (mean probability drop where each fires):")
        for a, v in ranked[:8]:
            print(f"  atom {a.index}: {v:+.3f}" + (f"  [{'; '.join(c for c, _ in a.flags)}]" if a.flags else ""))
    print(f"dictionary {d.key} in {open_store(args).url}; report: {out}")
    return 0
