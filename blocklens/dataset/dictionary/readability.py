"""How readable a dictionary's atoms are, beside the same layer's channels on the same folder: the machine score of
:mod:`blocklens.dataset.readability` (two-alternative trials judged by a model's features), from the tables the
survey keeps, so nothing is run through the analysed layer again.

A unit's patches, each the receptive-field box around one position of one image (one patch per image):

- ``top``: the images where the unit's peak is highest, at that peak (an atom's examples, or a channel's);
- ``bottom``: the images where the unit's lowest value is lowest, at that value (a tie, as where an atom is zero at
  every position, at a position drawn at random), leaving out the unit's top images;
- ``random``: images and positions drawn at random (seeded per unit).

An atom's value is its code (zero where it is absent); a channel's is its activation (negative at its lowest on a
signed layer, so a channel's bottom patches show its opposite, an atom's show where it is absent): top against random
is the comparison that treats both alike.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from ...analyses.common import spatial_layer
from ...errors import BlocklensError
from ...store import IconStore
from ..examples import patch_box
from ..readability import CONTRASTS, Judge, Patch, Unit, readability
from .storage import save_dictionary

__all__ = ["dictionary_units", "dictionary_readability", "TOP"]

TOP = 10          # top patches per unit (one held out per trial, the other 9 the references, as in Zimmermann et al.)
TRIALS = 20       # trials per unit and contrast


def _patch(paths: list[str], r: int, pos: int, grid: tuple[int, int], frame: int, rf: int) -> Patch:
    y, x = divmod(int(pos), grid[1])
    return Patch(paths[r], patch_box(y, x, grid, frame, rf))


def _units(names: list[str], peak, peak_pos, low, low_pos, paths, grid, frame, rf, count, seed) -> list[Unit]:
    n, hw = peak.shape[0], grid[0] * grid[1]
    out = []
    for j, name in enumerate(names):
        order = np.argsort(-peak[:, j], kind="stable")
        top = [int(r) for r in order[:count] if peak[r, j] > 0]
        rng = np.random.default_rng([seed, j])
        shuffled = rng.permutation(n)                                 # ties at the bottom in a random order
        taken = set(top)
        bottom = [int(r) for r in shuffled[np.argsort(low[shuffled, j], kind="stable")] if int(r) not in taken][:count]
        rand_images = rng.choice(n, size=min(count, n), replace=False)
        out.append(Unit(name=name, top=[_patch(paths, r, peak_pos[r, j], grid, frame, rf) for r in top],
                        bottom=[_patch(paths, r, low_pos[r, j], grid, frame, rf) for r in bottom],
                        random=[_patch(paths, int(r), int(rng.integers(hw)), grid, frame, rf) for r in rand_images]))
    return out


def _channels(which, c: int, seed: int) -> list[int]:
    if which is None:
        return list(range(c))
    if isinstance(which, (int, np.integer)):
        if not 1 <= int(which) <= c:
            raise BlocklensError(f"channels={which}: a sample of 1 to the layer's {c} channels")
        return sorted(np.random.default_rng(seed).choice(c, size=int(which), replace=False).tolist())
    got = [int(v) for v in which]
    bad = [v for v in got if not 0 <= v < c]
    if bad:
        raise BlocklensError(f"channel {bad[0]} is not one of the layer's {c} channels (0..{c - 1})")
    return got


def dictionary_units(d: Any, model: Any, top: int = TOP, channels: int | Sequence[int] | None = None,
                     seed: int = 0) -> tuple[list[Unit], list[Unit]]:
    """``(atoms, channels)`` as :class:`~blocklens.dataset.readability.Unit` s of ``top`` patches of each kind
    (see the module docstring); ``channels``: all of the layer's (None), a seeded sample of that many, or a list."""
    need = ("peak", "peak_pos", "low", "low_pos", "ch_peak", "ch_pos", "ch_low", "ch_low_pos")
    missing = [t for t in need if d.tables.get(t) is None]
    if missing:
        raise BlocklensError(f"dictionary {d.key} has no {', '.join(missing)} table(s) (saved before the readability "
                             "score existed): run concept_dictionary again to score it")
    if top < 3:
        raise BlocklensError(f"top={top}: a readability trial needs at least 3 top patches per unit")
    info = spatial_layer(model, d.layer, "the readability score")
    grid, frame = (info.height, info.width), model.input_size
    rf = int(d.options.get("receptive_field") or model.receptive_field(info.name)["size"])
    t = {k: np.asarray(d.tables[k]) for k in need}
    ai = [a.index for a in d.atoms]
    atoms = _units([f"atom {a}" for a in ai], t["peak"][:, ai], t["peak_pos"][:, ai], t["low"][:, ai],
                   t["low_pos"][:, ai], d.images, grid, frame, rf, top, seed)
    cs = _channels(channels, t["ch_peak"].shape[1], seed)
    chans = _units([f"channel {c}" for c in cs], t["ch_peak"][:, cs], t["ch_pos"][:, cs], t["ch_low"][:, cs],
                   t["ch_low_pos"][:, cs], d.images, grid, frame, rf, top, seed + 1)
    return atoms, chans


def dictionary_readability(d: Any, model: Any, top: int = TOP, trials: int = TRIALS,
                           channels: int | Sequence[int] | None = None, judge: Judge | None = None, seed: int = 0,
                           store: IconStore | str | None = None) -> dict:
    """The readability of ``d``'s atoms and of its layer's channels on its folder (see the module docstring),
    against bottom and random patches; kept as ``d.quality["readability"]`` (and ``d`` saved again in ``store``
    when one is given) and returned: ``{"atoms": {contrast: figures}, "channels": {...}, ...}``. ``model``: the
    dictionary's model (its input frame cuts the patches); ``judge``: default the model's penultimate features
    (:class:`~blocklens.dataset.readability.Judge`)."""
    t0 = time.perf_counter()
    atoms, chans = dictionary_units(d, model, top, channels, seed)
    judge = judge if judge is not None else Judge(model)
    got = readability(model, atoms + chans, judge=judge, trials=trials, root=d.folder, seed=seed)
    split = {}
    for kind, units in (("atoms", atoms), ("channels", chans)):
        names = {u.name for u in units}
        split[kind] = {c: got[c].subset(names).to_json() for c in CONTRASTS}
    q = {**split, "top": top, "trials_per_unit": trials, "judge": got[CONTRASTS[0]].judge,
         "seconds": round(time.perf_counter() - t0, 2),
         "note": (f"two-alternative trials (Zimmermann et al. 2024): a unit's top patch or its bottom (or a random) "
                  f"patch, which is nearer, by mean cosine of the judge's features, to the unit's {top - 1} other top "
                  "patches; share correct (chance 0.5) ± standard error over units")}
    d.quality["readability"] = q
    if store is not None:
        save_dictionary(d, store if isinstance(store, IconStore) else IconStore(store))
    return q
