"""The collected rows, read back lazily, and the survey: every image encoded on the fitted dictionary.

:class:`Collected` knows, per collect shard, which images were readable, their predictions and which are held out,
and reads a shard's rows only when asked (one shard in memory at a time). :func:`survey` encodes every image's rows
once: per image and atom its peak, the peak's position and its share of the image's code mass, per image and
channel its peak, per image and unit (atom or channel) its lowest value and where (ties broken at random: an atom is
zero at most positions), for the readability score's top and bottom patches, and on the held-out images the
quality of the dictionary beside a PCA of equal size and the layer's channels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ...jobs import npz_load
from .codebook import Codebook, nonneg_rows
from .rules import ACTIVE, HOLDOUT

__all__ = ["Collected", "Survey", "survey"]


class Collected:
    """The collect phase's shards: ``images`` (all, relative paths), per readable image (``readable``: positions in
    ``images``) ``pred``, ``prob``, ``held`` (held out of training), ``shard_of`` and ``row0`` (its first row in
    its shard); ``hw`` positions per image; ``signed``."""

    def __init__(self, store, paths: list[str], metas: list[dict], images: list[str], spans, hw: int):
        self.store, self.paths, self.images, self.hw = store, paths, images, hw
        readable, shard_of, row0 = [], [], []
        for s, ((a, _), m) in enumerate(zip(spans, metas)):
            ids = a + np.nonzero(m["ok"])[0]
            readable.extend(ids.tolist())
            shard_of.extend([s] * len(ids))
            row0.extend((np.arange(len(ids)) * hw).tolist())
        self.readable = np.asarray(readable, np.int64)
        self.shard_of, self.row0 = np.asarray(shard_of, np.int64), np.asarray(row0, np.int64)
        self.pred = np.concatenate([m["pred"] for m in metas]) if metas else np.zeros(0, np.int64)
        self.prob = np.concatenate([m["prob"] for m in metas]) if metas else np.zeros(0, np.float32)
        self.signed = any(bool(m["neg"]) for m in metas)
        self.held = (np.arange(len(self.readable)) % HOLDOUT) == HOLDOUT - 1
        if not self.held.any() and len(self.held) > 1:  # fewer than HOLDOUT images: the last one is held out
            self.held[-1] = True
        self._cache: tuple[int, np.ndarray] | None = None

    def rows(self, s: int) -> np.ndarray:
        """Shard ``s``'s rows ``(n*H*W, C)`` (float16)."""
        if self._cache is None or self._cache[0] != s:
            self._cache = (s, npz_load(self.store.files.read(self.paths[s]))["rows"])
        return self._cache[1]

    def images_of(self, s: int) -> np.ndarray:
        """The readable-image numbers (positions in ``readable``) of shard ``s``, in row order."""
        return np.nonzero(self.shard_of == s)[0]

    def train_mask(self, s: int) -> np.ndarray:
        return np.repeat(~self.held[self.images_of(s)], self.hw)


@dataclass
class Survey:
    """Per readable image (rows) and atom (columns): ``peak``, ``peak_pos``, ``mass``, ``low`` / ``low_pos`` (the
    lowest code and where); per image and channel ``ch_peak`` / ``ch_pos`` and ``ch_low`` / ``ch_low_pos``;
    ``quality`` (see :func:`survey`)."""

    peak: np.ndarray
    peak_pos: np.ndarray
    mass: np.ndarray
    ch_peak: np.ndarray
    ch_pos: np.ndarray
    low: np.ndarray
    low_pos: np.ndarray
    ch_low: np.ndarray
    ch_low_pos: np.ndarray
    quality: dict = field(default_factory=dict)


def lowest(per: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, positions, units)`` -> each image's and unit's lowest value ``(n, units)`` and its position, a tied
    position drawn at random (``gen``, on the CPU) so that a unit at zero everywhere does not point at the corner."""
    lo = per.min(1).values
    noise = torch.rand(per.shape, generator=gen).to(per.device) + 1.0
    return lo, ((per <= lo[:, None, :]) * noise).argmax(1)


class _Tally:
    """Held-out sums: squared error of the dictionary and of the PCA, total variance, active counts, atoms and
    channels ever active."""

    def __init__(self, k: int, cols: int):
        self.sse = self.sse_pca = self.sst = 0.0
        self.rows = self.active = self.ch_active = 0
        self.alive = np.zeros(k, bool)
        self.ch_alive = np.zeros(cols, bool)

    def add(self, x: torch.Tensor, codes: torch.Tensor, atoms: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor):
        self.sse += float(((x - codes @ atoms) ** 2).sum())
        xc = x - mean
        self.sse_pca += float(((xc - (xc @ basis.T) @ basis) ** 2).sum())
        self.sst += float((xc ** 2).sum())
        on = codes > ACTIVE * codes.max(1, keepdim=True).values.clamp(min=1e-30)
        ch_on = x > ACTIVE * x.max(1, keepdim=True).values.clamp(min=1e-30)
        self.rows += len(x)
        self.active += int(on.sum())
        self.ch_active += int(ch_on.sum())
        self.alive |= on.any(0).cpu().numpy()
        self.ch_alive |= ch_on.any(0).cpu().numpy()

    def result(self, k: int, pca_stability: float) -> dict:
        n = max(self.rows, 1)
        return {"heldout_positions": self.rows,
                "explained_variance": 1 - self.sse / max(self.sst, 1e-30),
                "active_per_position": self.active / n, "dead": int((~self.alive).sum()),
                "pca": {"explained_variance": 1 - self.sse_pca / max(self.sst, 1e-30), "active_per_position": k,
                        "dead": 0, "stability": pca_stability},
                "channels": {"units": int(len(self.ch_alive)), "active_per_position": self.ch_active / n,
                             "dead": int((~self.ch_alive).sum()), "explained_variance": 1.0, "stability": 1.0}}


def survey(col: Collected, cb: Codebook, device, pca: tuple[torch.Tensor, torch.Tensor], pca_stability: float,
           on_shard: Callable[[int, int], None] | None = None) -> Survey:
    """Encode every readable image (see the module docstring); quality sums over the held-out images only."""
    n, k, hw = len(col.readable), cb.k, col.hw
    t = cb.tensors(device)
    peak, mass = np.zeros((n, k), np.float32), np.zeros((n, k), np.float32)
    peak_pos = np.zeros((n, k), np.int64)
    ch_peak = ch_pos = ch_low = ch_low_pos = None
    low, low_pos = np.zeros((n, k), np.float32), np.zeros((n, k), np.int64)
    gen = torch.Generator().manual_seed(0)
    tally = _Tally(k, cb.atoms.shape[1])
    mean, basis = pca[0].to(device), pca[1].to(device)
    shards = sorted(set(col.shard_of.tolist()))
    for done, s in enumerate(shards):
        ids = col.images_of(s)
        raw = torch.as_tensor(np.asarray(col.rows(s), np.float32), device=device)        # (len(ids)*hw, C)
        x = nonneg_rows(raw, cb.signed)
        with torch.no_grad():
            codes = cb.encode(x, t)
        per = codes.reshape(len(ids), hw, k)
        pk, pp = per.max(1)
        peak[ids], peak_pos[ids] = pk.cpu().numpy(), pp.cpu().numpy()
        tot = per.sum(1)
        mass[ids] = (tot / tot.sum(1, keepdim=True).clamp(min=1e-30)).cpu().numpy()
        lv, lp = lowest(per, gen)
        low[ids], low_pos[ids] = lv.cpu().numpy(), lp.cpu().numpy()
        chans = raw.reshape(len(ids), hw, -1)
        chv, chp = chans.max(1)
        if ch_peak is None:
            c = raw.shape[1]
            ch_peak, ch_low = np.zeros((n, c), np.float32), np.zeros((n, c), np.float32)
            ch_pos, ch_low_pos = np.zeros((n, c), np.int64), np.zeros((n, c), np.int64)
        ch_peak[ids], ch_pos[ids] = chv.cpu().numpy(), chp.cpu().numpy()
        lv, lp = lowest(chans, gen)
        ch_low[ids], ch_low_pos[ids] = lv.cpu().numpy(), lp.cpu().numpy()
        held = torch.as_tensor(np.repeat(col.held[ids], hw), device=device)
        if bool(held.any()):
            tally.add(x[held], codes[held], t["atoms"], mean, basis)
        if on_shard:
            on_shard(done + 1, len(shards))
    return Survey(peak=peak, peak_pos=peak_pos, mass=mass, ch_peak=ch_peak, ch_pos=ch_pos, low=low, low_pos=low_pos,
                  ch_low=ch_low, ch_low_pos=ch_low_pos, quality=tally.result(k, pca_stability))
