"""The page document: everything the views need for one explanation, so that every hover is answered in the
page without a round trip.

Layout (``version`` 1)::

    model, fingerprint, image_sha, preset, image (URL of the model's crop), predictions, classes, labels, pair
    layers[i]: layer, shape (C, H, W), activations {shape, b64: little-endian float32 (C, H, W)},
               dictionary {channels (H, W, top), values, magnitude (H, W)},
               attribution {class: (C,)} (linear: a pair's attribution is a difference of two rows),
               spatial {class: (H, W)}, channel_icons {channel: key},
               groups {default k, counts [k...], options {k: {spatial (k, H, W), colors, cell_colors,
                       attribution (k, n), relative_error, icons [key...], score, method}}},
               grid {key, shape, cell, magnitude (H, W)} or null,
               methods {score, channels, spatial, groups}: how the numbers above were computed,
               faithfulness {class, label, score, channels, spatial, groups, lines {channels, spatial, groups}}
                       or null: how well they predicted removing what they credit, on this image (top class)
    flows[i]: from, to, spatial (H2, W2, H1, W1), groups {k: (k, k)}, groups_method
    atoms (only with a concept dictionary): layer, key, shape (H, W), k, top_atoms / top_codes (H, W, t),
           maps {atom: (H, W)}, classes, attribution (K, n), residual, whole (n,), share_attribution, relative_error,
           removal [per class: atoms, predicted, actual, rank_correlation, ...], dictionary {key, model, folder,
           shown {atom: {key, coverage, drives, flags}}} (see :mod:`blocklens.analyses.atoms`)
    icons: {key: URL or null}  (null: not rendered yet, or cut from a sprite sheet; the page fills them in)
    sprites: [{layer, url, icon_size [H, W], cells {key: [x, y]}}]: per-layer sheets written by
             ``blocklens precompute``; one picture per layer instead of one request per icon

URLs are whatever ``icon_url(key, icon)`` returns: ``/api/icons/<key>.png`` in the app, ``data:`` URIs in the
report.
"""
from __future__ import annotations

import base64
from typing import Callable

import numpy as np

from ..analyses.common import to_jsonable

VERSION = 1


def _f32(a) -> dict:
    a = np.ascontiguousarray(np.asarray(a, dtype="<f4"))
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def layer_sprites(expl, store, sprite_url: Callable[[str, str, dict], str]) -> list[dict]:
    """The sprite sheets ``store`` holds for the explanation's layers at its icon recipe, as page-document
    entries; only the cells of icons the views show. ``sprite_url(layer, recipe_hash, index)`` names the
    sheet's URL (a route of the app, or a ``data:`` URI)."""
    from ..recipes import recipe_for

    recipe = recipe_for(**expl.recipe.get("icons", {}))
    out = []
    for lr in expl.layers:
        try:
            index = store.sprite_index(expl.fingerprint, lr.layer, recipe)
        except Exception:  # a store without sprites, or a damaged index: the icons are served one by one
            index = None
        if not index or not index.get("units"):
            continue
        wanted = set(expl.icon_index.get(lr.layer, {}).get("channels", {}).values())
        cells = {u["key"]: [int(u["x"]), int(u["y"])] for u in index["units"] if u.get("key") in wanted}
        if not cells:
            continue
        url = sprite_url(lr.layer, index["recipe_hash"], index)
        if url:
            out.append({"layer": lr.layer, "url": url, "icon_size": list(index["icon_size"]), "cells": cells})
    return out


def page_data(expl, icon_url: Callable[[str, object], str | None], image_url: str | None,
              grid_url: Callable[[str, object], str | None] | None = None, sprites: list[dict] | None = None) -> dict:
    """The page document for ``expl``. ``icon_url(key, icon_or_None)`` gives each icon's URL (None: not ready);
    ``grid_url(key, grid_or_None)`` each activation grid's picture; ``image_url`` the photo's; ``sprites`` (see
    :func:`layer_sprites`) sheets whose cells replace single icons."""
    layers = []
    keys: list[str] = []
    for lr in expl.layers:
        idx = expl.icon_index.get(lr.layer, {"channels": {}, "groups": {}})
        options = {}
        for k, g in sorted(lr.group_options.items()):
            options[str(k)] = to_jsonable({
                "spatial": g.spatial, "colors": g.colors, "cell_colors": g.cell_colors,
                "attribution": g.attribution, "relative_error": g.relative_error,
                "residual": g.residual, "whole": g.whole, "score": g.score, "method": g.method})
            options[str(k)]["icons"] = list(idx["groups"].get(k, []))
            keys += options[str(k)]["icons"]
        channel_icons = {str(c): k for c, k in idx["channels"].items()}
        keys += list(channel_icons.values())
        grid = None
        if lr.grid_key:
            grid = {"key": lr.grid_key, "url": (grid_url or icon_url)(lr.grid_key, lr.grid), "shape": None,
                    "cell": None, "magnitude": None}
            if lr.grid is not None:
                grid.update(shape=list(lr.grid.shape), cell=int(lr.grid.cells.shape[2]),
                            magnitude=to_jsonable(lr.grid.magnitude))
        d = lr.dictionary
        layers.append({
            "layer": lr.layer, "shape": list(lr.shape),
            "activations": _f32(lr.activations) if lr.activations is not None else None,
            "dictionary": to_jsonable({"channels": d.channels, "values": d.values, "magnitude": d.magnitude}),
            "attribution": {str(c): to_jsonable(a.values) for c, a in lr.attribution.items()},
            "spatial": {str(c): to_jsonable(s.maps) for c, s in lr.spatial.items()},
            "channel_icons": channel_icons,
            "groups": {"default": int(lr.groups.n_groups), "counts": sorted(int(k) for k in lr.group_options),
                       "options": options},
            "grid": grid,
            "quality": (expl.quality.get(lr.layer) or {}).get("summary"),
            "quality_line": (expl.quality.get(lr.layer) or {}).get("line"),
            "methods": dict(getattr(lr, "methods", {}) or {}),
            "faithfulness": getattr(lr, "faithfulness", None),
        })
    atoms = expl.atoms_json() if getattr(expl, "atoms", None) is not None else None
    if atoms is not None:
        keys += [a["key"] for a in atoms["dictionary"]["shown"].values() if a["key"]]
    in_sprites = {k for s in (sprites or []) for k in s["cells"]}
    flows = [{"from": f["from"], "to": f["to"], "spatial": to_jsonable(f["spatial"]),
              "groups": {str(k): to_jsonable(v) for k, v in f.get("groups_by_k", {}).items()},
              "groups_method": f.get("groups_method", "linear")}
             for f in expl.flows]
    return {
        "version": VERSION, "model": expl.model, "fingerprint": expl.fingerprint, "image_sha": expl.image_sha,
        "preset": expl.preset, "image": image_url, "predictions": to_jsonable(expl.predictions),
        "classes": [int(c) for c in expl.classes],
        "labels": {str(c): p["label"] for c, p in zip(expl.classes, expl.predictions)},
        "pair": [int(c) for c in expl.pair], "layers": layers, "flows": flows,
        "icons": {k: (None if k in in_sprites else icon_url(k, expl.icons.get(k))) for k in dict.fromkeys(keys)},
        "sprites": sprites or [],
        "note": getattr(expl, "note", ""),
        "icon_quality": {k: v for q in getattr(expl, "quality", {}).values() for k, v in q.get("icons", {}).items()},
        **({"atoms": atoms} if atoms is not None else {}),
    }
