"""How faithful is each attribution candidate? layer x score x method -> agreement with interventions.

For every photo (the 6 bundled ones are the tuning set; the 4 shared photos that are not bundled -- astronaut,
rocket, grace_hopper, person -- are held out) and the top class, at each candidate layer, with each score
(``logit``, ``logprob``) and each method:

- ``linear``: gradient x activation;
- ``path``: path from zero activations (32 midpoint steps);
- ``ablation``: the removal effect itself (one forward pass from the layer per group / channel / position).

it measures (blocklens.analyses.faithfulness):

- groups (6, NMF): Spearman rank correlation between the group attribution and the score's drop when the group's
  exact share is removed (``rho_rm``, circular = 1 for ``ablation``), whether the top group is the most harmful
  removal (``top_rm``); non-circular: rank correlation with the score gained by restoring only that group into
  zero activations (``rho_rs``) and its top-1 agreement (``top_rs``); ``additivity``: the median over photos
  of (sum of the one-at-a-time removal effects) / (effect of removing all groups at once); ``sum``: the mean
  over photos of the groups' attributions summed (the issue's "whole-layer attribution");
- channels: whether deleting the top-8 attributed channels drops the score more than 8 random channels
  (``ch_win``, 8 random draws);
- spatial: whether the deletion curve of the class's probability over positions (most-attributed first, 8
  steps) has a smaller area than a random order's (``sp_del``, 3 orders) and the insertion curve a larger one
  (``sp_ins``);
- ``s``: seconds to compute the method's attributions (groups + channels + map) for one photo and layer, on a
  shared 2-core CPU (ablation: one pass per group, channel and position; channel ablation is skipped, "n/a",
  for layers with more than 256 channels).

Run: python bench/bench_faithfulness.py [--out results.jsonl] [--images a,b] [--layers l1,l2]
     python bench/bench_faithfulness.py --spatial-steps 16   (explain's spatial default on every photo)
     python bench/bench_faithfulness.py --table results.jsonl   (only print the table of saved results)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import blocklens as bl
from blocklens.analyses import faithfulness as F
from blocklens.analyses.attribution import layer_gradients
from blocklens.analyses.common import prepare
from blocklens.analyses.groups import neuron_groups

SHARED = Path("/work/shared/images")
TUNE = ["chelsea", "coffee", "dog", "collies", "giraffe", "multiple_dogs"]
HELD_OUT = ["astronaut", "rocket", "grace_hopper", "person"]
LAYERS = ["blocks.7", "blocks.11", "blocks.9.expand.act"]
SCORES = ["logit", "logprob"]
METHODS = ["linear", "path", "ablation"]


def image_path(name: str):
    hits = sorted(SHARED.glob(f"{name}.*"))
    return hits[0] if hits else bl.bundled_image(name)


def single_removals(model, x, layer, act, cls, what: str) -> dict:
    """Removal effect of each channel (``what="channel"``) or position, for both scores, one batch."""
    c, h, w = act.shape
    if what == "channel":
        masks = 1 - torch.eye(c, dtype=act.dtype)[:, :, None, None].expand(c, c, 1, 1)
    else:
        masks = (1 - torch.eye(h * w, dtype=act.dtype)).view(h * w, 1, h, w)
    out = F.run_batch(model, x, layer, torch.cat([act[None], act[None] * masks]))
    res = {}
    for score in SCORES:
        s = F.scores_of(out, [cls], score)[:, 0].double().numpy()
        res[score] = s[0] - s[1:]
    return res


def measure(model, name: str, layers, path_steps: int = 32) -> list[dict]:
    prep = prepare(model, image_path(name))
    x = prep.x
    cls = model.predict(x, top=1)[0].index
    rows = []
    for layer in layers:
        act = F.layer_activation(model, x, layer)
        groups = neuron_groups(model, prep, layer, classes=[cls])
        parts = F.group_parts(act.double().numpy(), groups)
        t = time.perf_counter()
        # one pass per channel: skipped for the wide layers (672 channels: ~40 s a photo on 2 cores)
        abl_ch = single_removals(model, x, layer, act, cls, "channel") if act.shape[0] <= 256 else None
        t_ch = time.perf_counter() - t
        t = time.perf_counter()
        abl_sp = single_removals(model, x, layer, act, cls, "position")
        t_sp = time.perf_counter() - t
        for score in SCORES:
            sfn = F.score_fn(score, [cls])
            t = time.perf_counter()
            iv = F.group_interventions(model, x, groups, [cls], score, act=act)
            t_iv = time.perf_counter() - t
            for method in METHODS:
                t = time.perf_counter()
                if method == "ablation":
                    g_attr = iv["removal"][:, 0]
                    ch_vals = abl_ch[score] if abl_ch is not None else None
                    sp_map = abl_sp[score].reshape(act.shape[1:])
                    cost = t_iv + t_ch + t_sp
                else:
                    lg = layer_gradients(model, x, layer, sfn, method, path_steps)
                    prod = lg.product.double().numpy()
                    g_attr = np.einsum("kchw,chw->k", parts, lg.gradient.double().numpy())
                    ch_vals, sp_map = prod.sum((1, 2)), prod.sum(0)
                    cost = time.perf_counter() - t
                gf = F.group_faithfulness(model, x, groups, g_attr, cls, score=score, method=method,
                                          interventions={"removal": iv["removal"], "restore": iv["restore"],
                                                         "remove_all": iv["remove_all"]})
                cd = None if ch_vals is None else F.channel_deletion(model, x, layer, ch_vals, [cls], score=score,
                                                                     method=method, k=8, ks=[8], n_random=8, act=act)
                sd = F.spatial_deletion(model, x, layer, sp_map, [cls], score=score, method=method, steps=8,
                                        n_random=3, act=act)
                rows.append(dict(image=name, layer=layer, score=score, method=method, cls=int(cls),
                                 rho_rm=gf.rank_correlation, top_rm=gf.top_agrees, rho_rs=gf.restore_correlation,
                                 top_rs=gf.restore_top_agrees, additivity=gf.additivity,
                                 whole=float(g_attr.sum()), max_group=float(g_attr.max()), ch_win=cd and cd.wins, ch_drop=cd and cd.drop_top,
                                 ch_drop_random=cd and cd.drop_random, prob=cd and cd.full_prob,
                                 prob_top8=cd and cd.top_prob, prob_random8=cd and cd.random_prob,
                                 sp_del=sd.deletion_wins, sp_ins=sd.insertion_wins,
                                 sp_quarter=float(sd.deletion_prob[2] if sd.deletion_prob is not None else np.nan),
                                 sp_quarter_random=float(sd.deletion_random_prob[2]
                                                         if sd.deletion_random_prob is not None else np.nan),
                                 s=cost))
        print(f"  {name} {layer} done", file=sys.stderr, flush=True)
    return rows


def spatial_path_check(model, steps: int, layers) -> None:
    """The explain default for maps: path from zero at ``steps`` steps, every photo: deletion win and gap."""
    from blocklens.analyses.attribution import class_path_gradients

    for layer in layers:
        wins, gaps = [], []
        for name in TUNE + HELD_OUT:
            x = prepare(model, image_path(name)).x
            c = model.predict(x, top=1)[0].index
            act, g, s, s0 = class_path_gradients(model, x, layer, [c], "logprob", steps=steps)
            sd = F.spatial_deletion(model, x, layer, (act * g[0]).sum(0).numpy(), [c], score="logprob", steps=8,
                                    n_random=2, act=act)
            wins.append(sd.deletion_wins)
            gaps.append(abs(float((act * g[0]).double().sum()) - float(s[0] - s0[0])) / abs(float(s[0] - s0[0])))
        print(f"{layer} path {steps} steps, logprob: spatial deletion beats random on {sum(wins)}/{len(wins)} photos "
              f"(held out: {sum(wins[len(TUNE):])}/{len(HELD_OUT)}); completeness gap median {np.median(gaps):.3f}, "
              f"max {max(gaps):.3f}")


def table(rows: list[dict], images: list[str]) -> str:
    rows = [r for r in rows if r["image"] in images]
    keys = sorted({(r["layer"], r["score"], r["method"]) for r in rows},
                  key=lambda k: (LAYERS.index(k[0]) if k[0] in LAYERS else 99, SCORES.index(k[1]), METHODS.index(k[2])))
    head = (f"| layer | score | method | rho_rm | top_rm | rho_rs | top_rs | additivity | sum | ch_win | sp_del "
            f"| sp_ins | s | n |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for key in keys:
        rs = [r for r in rows if (r["layer"], r["score"], r["method"]) == key]
        mean = lambda f: np.nanmean([float(r[f]) for r in rs])  # noqa: E731
        def pct(f):
            vals = [bool(r[f]) for r in rs if r[f] is not None]
            return f"{100 * np.mean(vals):.0f}%" if vals else "n/a"

        circ = "1 (circular)" if key[2] == "ablation" else f"{mean('rho_rm'):.2f}"
        ctop = "100% (circ.)" if key[2] == "ablation" else pct("top_rm")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {circ} | {ctop} | {mean('rho_rs'):.2f} | {pct('top_rs')} "
                     f"| {np.nanmedian([r['additivity'] for r in rs]):.2f} | {mean('whole'):.2f} | {pct('ch_win')} | {pct('sp_del')} "
                     f"| {pct('sp_ins')} | {mean('s'):.2f} | {len(rs)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_faithfulness.jsonl")
    ap.add_argument("--images", default=",".join(TUNE + HELD_OUT))
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--table", default=None, help="print the tables of a saved results file and exit")
    ap.add_argument("--spatial-steps", type=int, default=None,
                    help="only check path maps at this many steps on every photo (explain's default: 16)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.spatial_steps:
        spatial_path_check(bl.load_model("efficientnet_lite0"), args.spatial_steps, args.layers.split(",")[:2])
        return
    if args.table:
        rows = [json.loads(l) for l in Path(args.table).read_text().splitlines() if l.strip()]
    else:
        model = bl.load_model("efficientnet_lite0")
        rows = []
        with open(args.out, "w") as f:
            for name in args.images.split(","):
                for r in measure(model, name, args.layers.split(",")):
                    f.write(json.dumps(r) + "\n")
                    rows.append(r)
                f.flush()
    for title, imgs in (("tuning photos (6 bundled)", TUNE), ("held-out photos (4 not bundled)", HELD_OUT),
                        ("all 10 photos", TUNE + HELD_OUT)):
        if any(r["image"] in imgs for r in rows):
            print(f"\n### {title}\n")
            print(table(rows, imgs))


if __name__ == "__main__":
    main()
