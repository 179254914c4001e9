"""Command line for the icon store at scale: ``precompute`` and ``store info|verify|export``."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import BlocklensError
from .args import (add_device, add_model, add_recipe, add_store, load_model_arg, nonneg_int, open_store, positive_int,
                   print_help, recipe_args, stderr_log)

PRECOMPUTE_EXAMPLES = """\
examples:
  blocklens precompute                                   the report's layers, reference recipe, default store
  blocklens precompute --layers blocks.3 blocks.9 --units 0-15 --preset quick --workers 2
  blocklens precompute --logits all --store /data/icons  every class icon
  blocklens precompute --store s3://bucket/icons --storage-options '{"anon": false}'     (pip install s3fs)
  blocklens precompute --layers blocks.11 --ray auto --gpus-per-task 1 --store gs://bucket/icons
  blocklens precompute --dry-run --json                  what would be rendered

A run that is stopped (Ctrl-C, kill -9, a lost machine) resumes where it stopped when started again: what the
store holds is skipped. Several runs may write to one store at once.
"""

STORE_EXAMPLES = """\
examples:
  blocklens store info                                   the default store
  blocklens store info --store s3://bucket/icons --json
  blocklens store verify --clean-temp                    check every entry; remove stale temporary files
  blocklens store export --layer blocks.9 --out blocks9/ PNGs + index.json of one layer
"""


def add_commands(sub) -> None:
    """Add this module's subcommands to the ``blocklens`` parser's ``sub``."""
    p = sub.add_parser(
        "precompute", help="render every icon of a model's layers into a (shareable) store",
        description="Render every channel of the chosen layers (and, on request, neurons and class logits) into "
                    "the icon store, in batches, with a progress bar and an ETA. What the store already holds is "
                    "skipped, so an interrupted run resumes; every write is atomic, so a run killed at any moment "
                    "leaves no damaged entry, and several runs may share a store. Batches run on local worker "
                    "processes, or as tasks on a Ray cluster with --ray. Each finished layer also gets a sprite "
                    "sheet (one PNG of all its icons) and a JSON index in the store, which the web app and the "
                    "report read.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PRECOMPUTE_EXAMPLES)
    add_model(p)
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="layers whose units to render (default: the "
                   "report's layers, unless only --logits is given); 'blocklens layers' lists them")
    p.add_argument("--units", nargs="+", metavar="SPEC", help="which units of each layer: all (default), 0-15, "
                   "3,5,8-11, or CHANNEL@X,Y for a neuron (12@7,7)")
    p.add_argument("--logits", nargs="+", metavar="SPEC", help="class icons too: all, or indices and ranges (0-9)")
    add_store(p)
    p.add_argument("--workers", type=nonneg_int, default=1, help="local worker processes (default 1; 0 renders "
                   "in this process)")
    p.add_argument("--threads", type=positive_int, help="torch threads per worker (default: CPU cores / workers; "
                   "1 per Ray task)")
    add_device(p, "; local worker i gets GPU i mod count; with --ray, the workers' device")
    p.add_argument("--ray", metavar="ADDRESS", help="run the batches as tasks on a Ray cluster (pip install "
                   "'blocklens[ray]'): auto (the cluster started with 'ray start' here, or $RAY_ADDRESS), "
                   "ray://HOST:10001, HOST:6379, or local (start a cluster in this process)")
    p.add_argument("--gpus-per-task", type=float, default=0, metavar="N", help="GPUs Ray reserves per task "
                   "(default 0; 1 on a GPU cluster)")
    p.add_argument("--batch", type=positive_int, default=8, help="units rendered together (default 8)")
    p.add_argument("--shard", metavar="I/N", help="only the I-th of N disjoint parts of the plan (0/4 ... 3/4): N "
                   "runs on N machines share one store without rendering anything twice")
    add_recipe(p, "device")
    p.add_argument("--verify", action="store_true", help="fully check the entries already in the store first "
                   "(slow on big stores); corrupt ones are rendered again")
    p.add_argument("--no-sprites", action="store_true", help="do not write sprite sheets")
    p.add_argument("--dry-run", action="store_true", help="only say what would be rendered")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_precompute)

    s = sub.add_parser("store", help="an icon store: info, verify, export",
                       description="Inspect an icon store (a folder or an fsspec URL): what it holds, a check of "
                                   "every entry, and an export of one layer to a folder of PNGs plus its index.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=STORE_EXAMPLES)
    ssub = s.add_subparsers(dest="store_command", metavar="SUBCOMMAND")
    s.set_defaults(func=lambda args: print_help(s))

    q = ssub.add_parser("info", help="what the store holds",
                        description="Entry count and size, temporary files left by interrupted writes, entries "
                                    "moved aside as corrupt, and every sprite sheet (model, layer, recipe, icons). "
                                    "Reads a listing only: nothing is decoded.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  blocklens store info --store /data/icons --json")
    add_store(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_store_info)

    q = ssub.add_parser("verify", help="check every entry and sprite sheet",
                        description="Decode every entry and check its pixel checksum and key; corrupt entries are "
                                    "moved aside to icons/corrupt/ (precompute renders them again). Sprite sheets "
                                    "are checked against their index. Exit status 1 when anything is corrupt.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="example:\n  blocklens store verify --clean-temp 0 --json")
    add_store(q)
    q.add_argument("--no-quarantine", action="store_true", help="report corrupt entries but leave them in place")
    q.add_argument("--clean-temp", nargs="?", type=float, const=3600.0, metavar="SECONDS",
                   help="also remove temporary files (and unreferenced sprite sheets) older than SECONDS "
                        "(default 3600; 0 when no run is writing)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_store_verify)

    q = ssub.add_parser("export", help="one layer's icons as PNGs plus index.json",
                        description="Write every icon the store holds for one layer (LAYER, or 'logit' for the "
                                    "class icons) to a folder: channel-0005.png... and index.json (model, layer, "
                                    "recipe, per unit its key, objective and dead flag). The recipe: the one of "
                                    "the layer's sprite sheet when the store has exactly one, else --preset/--size/"
                                    "--steps/--seed (default preset: default) or --recipe.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n  blocklens store export --layer blocks.9 --out blocks9/\n"
                               "  blocklens store export --layer logit --preset quick --out classes/ --json")
    add_model(q)
    q.add_argument("--layer", required=True, help="the layer (or 'logit')")
    q.add_argument("--out", required=True, metavar="DIR", help="where the PNGs and index.json go")
    add_store(q)
    add_recipe(q, None)
    q.add_argument("--recipe", metavar="HASH", help="the recipe of one of the layer's sprite sheets, by its hash "
                   "(prefix); 'blocklens store info' lists them")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_store_export)


# -- helpers ---------------------------------------------------------------------------------------------------
def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


# -- commands --------------------------------------------------------------------------------------------------
def cmd_precompute(args) -> int:
    from ..precompute import precompute

    store = open_store(args)
    over = recipe_args(args, "device")
    summary = precompute(args.model, args.layers, args.units, args.logits, store=store, workers=args.workers,
                         threads=args.threads, device=args.device, ray=args.ray, gpus_per_task=args.gpus_per_task,
                         batch=args.batch, progress=False if args.no_progress else None,
                         sprites=not args.no_sprites, verify=args.verify, dry_run=args.dry_run, shard=args.shard,
                         weights=args.weights, log=stderr_log(args), **over)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        w = max(len(name) for name in summary["layers"])
        print(f"{'layer':<{w}}  planned  present  rendered  skipped  failed  sprite")
        for name, r in summary["layers"].items():
            print(f"{name:<{w}}  {r['planned']:7d}  {r['present']:7d}  {r['rendered']:8d}  {r['skipped']:7d}  "
                  f"{r['failed']:6d}  {r['sprite'] or '-'}")
        rate = f", {summary['units_per_minute']:.1f} icons/min" if summary.get("units_per_minute") else ""
        verb = "would render" if args.dry_run else "rendered"
        count = summary["to_render"] if args.dry_run else summary["rendered"]
        print(f"{verb} {count} of {summary['planned']} icons into {summary['store']} in "
              f"{summary['seconds']:.1f} s{rate}")
        for e in summary["errors"]:
            print(f"error: {e}", file=sys.stderr)
    return 1 if summary["failed"] or summary["errors"] else 0


def cmd_store_info(args) -> int:
    store = open_store(args)
    info = store.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"store    {info['store']} ({info['backend']}, writes: {info['write_mode']})")
    print(f"entries  {info['entries']} icons, {_mb(info['entry_bytes'])}")
    if info["temp_files"]:
        print(f"temp     {info['temp_files']} files left by interrupted writes (blocklens store verify --clean-temp)")
    if info["corrupt_files"]:
        print(f"corrupt  {info['corrupt_files']} entries moved aside to icons/corrupt/")
    print(f"sprites  {len(info['sprites'])} sheets, {_mb(info['sprite_bytes'])}")
    if info.get("beneath"):
        b, m = info["beneath"], info["beneath"].get("manifest") or {}
        print(f"beneath  {b['store']} (read-only): {b['entries']} icons" + (
            f", the reference pack of {m.get('model')} {', '.join(m.get('layers', {}))} at the {m.get('preset')} "
            f"preset ({(m.get('recipe') or {}).get('size')} px, {(m.get('recipe') or {}).get('steps')} steps), "
            f"blocklens {m.get('blocklens')}, recipe version {m.get('recipe_version')}" if m else ""))
    for sp in info["sprites"]:
        print(f"  {sp['model']}  {sp['layer']}  {sp['size']} px  {sp['steps']} steps  recipe {sp['recipe_hash']}  "
              f"{sp['count']}/{sp['total']} icons")
    return 0


def cmd_store_verify(args) -> int:
    import warnings

    store = open_store(args)
    report = store.verify(quarantine=not args.no_quarantine, progress=not args.no_progress and sys.stderr.isatty(),
                          beneath=True)
    bad_sprites = []
    sheets = store.sprites()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sp in sheets:
            try:
                ok = store.sprite_bytes(sp["fingerprint"], sp["layer"], sp["recipe_hash"]) is not None
            except (BlocklensError, KeyError, TypeError):
                ok = False
            if not ok:
                bad_sprites.append(f"{sp.get('fingerprint')}/{sp.get('layer')}/{sp.get('recipe_hash')}")
    removed = store.clean_temp(args.clean_temp) if args.clean_temp is not None else None
    out = {"store": store.url, "ok": report["ok"], "corrupt": report["corrupt"],
           "quarantined": bool(report["corrupt"]) and not args.no_quarantine,
           "sprites_ok": len(sheets) - len(bad_sprites), "sprites_bad": bad_sprites, "temp_removed": removed}
    pack = report.get("beneath")
    if pack is not None:
        out["pack"] = pack
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        where = "moved aside to icons/corrupt/" if out["quarantined"] else "left in place"
        print(f"{out['ok']} entries ok, {len(out['corrupt'])} corrupt" + (f" ({where})" if out["corrupt"] else ""))
        for k in out["corrupt"]:
            print(f"  corrupt: {k}")
        print(f"{out['sprites_ok']} sprite sheets ok, {len(bad_sprites)} unusable"
              + (" (precompute writes them again)" if bad_sprites else ""))
        if removed is not None:
            print(f"{removed} stale temporary files removed")
        if pack is not None:
            print(f"reference pack {pack['store']} (read-only, beneath): {pack['ok']} entries ok, "
                  f"{len(pack['corrupt'])} corrupt" + (" (reinstall blocklens)" if pack["corrupt"] else ""))
            for k in pack["corrupt"]:
                print(f"  corrupt in the pack: {k}")
    return 1 if out["corrupt"] or bad_sprites or (pack and pack["corrupt"]) else 0


def cmd_store_export(args) -> int:
    from ..recipes import recipe_for
    from ..precompute import LOGIT_GROUP, export_layer

    store = open_store(args)
    model = load_model_arg(args)
    layer = LOGIT_GROUP if args.layer.lower() in ("logit", "logits") else model.layer(args.layer).name
    over = recipe_args(args, None)
    if over is not None and args.recipe:
        raise BlocklensError("give --recipe or --preset/--size/--steps/--seed, not both")
    if over is not None:
        recipe = recipe_for(**over)
    else:
        sheets = store.sprites(model.fingerprint, layer)
        if args.recipe:
            sheets = [s for s in sheets if str(s.get("recipe_hash", "")).startswith(args.recipe)]
            if not sheets:
                raise BlocklensError(f"no sprite sheet of {layer} for {model.name} has a recipe hash starting "
                                     f"{args.recipe!r}; 'blocklens store info' lists them")
        if len(sheets) > 1:
            choices = ", ".join(f"{s['recipe_hash']} ({s['recipe'].get('size')} px, {s['recipe'].get('steps')} "
                                f"steps, {s.get('count')} icons)" for s in sheets)
            raise BlocklensError(f"the store has {len(sheets)} recipes for {layer}: {choices}; pick one with "
                                 "--recipe HASH or --size/--steps")
        recipe = sheets[0]["recipe"] if sheets else recipe_for(**recipe_args(args, "device"))
    index = export_layer(store, model, layer, recipe, args.out)
    if index["count"] == 0:
        raise BlocklensError(f"the store {store.url} holds no icon of {layer} for {model.name} with recipe "
                             f"{index['recipe_hash']} ({recipe['size']} px, {recipe['steps']} steps); "
                             "run blocklens precompute first")
    if args.json:
        print(json.dumps({"out": args.out, "layer": layer, "count": index["count"], "total": index["total"],
                          "missing": index["missing"], "recipe_hash": index["recipe_hash"],
                          "index": f"{args.out.rstrip('/')}/index.json"}, indent=2))
    else:
        print(f"wrote {index['count']} of {index['total']} icons of {layer} ({recipe['size']} px, "
              f"{recipe['steps']} steps) and index.json to {args.out}"
              + (f"; {len(index['missing'])} not in the store" if index["missing"] else ""))
    return 0
