"""Learning a dictionary from the stored rows of a layer, streaming, with bounded memory.

:class:`Rows` streams the training rows from the collect phase's shards (a buffer of at most ``buffer`` rows,
shuffled, cut into mini-batches), so memory does not grow with the folder. Two learners:

- :func:`fit_nmf`: online non-negative matrix factorization (the online dictionary learning of Mairal et al. 2010
  with non-negative codes and atoms, as scikit-learn's ``MiniBatchNMF``): per mini-batch, codes by non-negative
  least squares on the current atoms; sufficient statistics ``A = sum h h^T``, ``B = sum h x^T`` with a
  forgetting factor; atoms updated by coordinate descent on them, kept non-negative and of unit norm. Atoms that
  nothing uses are restarted on badly reconstructed rows.
- :func:`fit_sae`: a TopK sparse autoencoder (Gao et al. 2024) with a non-negative, unit-norm decoder (so its atoms
  live in the same space as NMF's and split activations the same way), trained with Adam on the mean squared
  error of rows scaled to unit mean norm; latents that fire on no row in an epoch are restarted on the worst
  reconstructed rows (until the last fifth of the epochs).

Both start from a seeded draw of rows (NNDSVD of the draw for NMF, the draw itself for the SAE) and run on the
device given (a GPU when there is one). :func:`pca_basis` is the baseline of equal size.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ...analyses.factorize import nndsvd_init
from .codebook import Codebook, nnls, nonneg_rows, topk_codes

__all__ = ["Rows", "fit_nmf", "fit_sae", "pca_basis", "matched_cosine"]


class Rows:
    """Mini-batches of non-negative rows from shards: ``load(i)`` returns shard ``i``'s rows ``(n, C)`` (float16 or
    32) and ``keep(i)`` the mask of the rows to use (the training images' rows)."""

    def __init__(self, shards: Sequence[int], load: Callable[[int], np.ndarray], keep: Callable[[int], np.ndarray],
                 signed: bool, device, batch: int = 2048, buffer: int = 200_000):
        self.shards, self.load, self.keep = list(shards), load, keep
        self.signed, self.device, self.batch, self.buffer = signed, torch.device(device), int(batch), int(buffer)

    def _chunks(self, order: Sequence[int]) -> Iterator[torch.Tensor]:
        held, size = [], 0
        for i in order:
            rows = self.load(i)[self.keep(i)]
            if len(rows):
                held.append(torch.as_tensor(np.asarray(rows, np.float32)))
                size += len(rows)
            if size >= self.buffer:
                yield torch.cat(held)
                held, size = [], 0
        if held:
            yield torch.cat(held)

    def batches(self, seed: int) -> Iterator[torch.Tensor]:
        """One epoch: shards in a seeded order, each buffer shuffled, mini-batches on the device."""
        gen = torch.Generator().manual_seed(int(seed))
        order = [self.shards[j] for j in torch.randperm(len(self.shards), generator=gen).tolist()]
        for buf in self._chunks(order):
            buf = buf[torch.randperm(len(buf), generator=gen)]
            for s in range(0, len(buf), self.batch):
                yield nonneg_rows(buf[s:s + self.batch].to(self.device), self.signed)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """About ``n`` rows (at most 80% of them, so that seeds differ) drawn evenly from every shard (seeded), on
        the device."""
        rng = np.random.default_rng(seed)
        sizes = [int(self.keep(i).sum()) for i in self.shards]
        n = min(n, int(0.8 * sum(sizes)))
        per = max(1, -(-n // max(sum(1 for z in sizes if z), 1)))
        out = []
        for i, size in zip(self.shards, sizes):
            if size:
                rows = np.asarray(self.load(i)[self.keep(i)], np.float32)
                out.append(rows[rng.choice(size, size=min(per, size), replace=False)])
        return nonneg_rows(torch.as_tensor(np.concatenate(out)).to(self.device), self.signed)

    def count(self) -> int:
        return sum(int(self.keep(i).sum()) for i in self.shards)


def _unit(w: torch.Tensor) -> torch.Tensor:
    return w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)


def fit_nmf(rows: Rows, k: int, channels: int, epochs: int, seed: int,
            on_epoch: Callable[[int, float], None] | None = None) -> Codebook:
    """Online NMF (see the module docstring): ``k`` atoms, ``epochs`` passes over the rows."""
    x0 = rows.sample(max(20 * k, 8000), seed).double().cpu().numpy()
    _, h0 = nndsvd_init(x0, k)
    atoms = _unit(torch.as_tensor(h0, dtype=torch.float32, device=rows.device))
    cols = atoms.shape[1]
    a_stat = torch.zeros(k, k, device=rows.device)
    b_stat = torch.zeros(k, cols, device=rows.device)
    total = max(rows.count(), 1)
    for epoch in range(epochs):
        err = num = 0.0
        worst = None
        for x in rows.batches(seed * 1000 + epoch):
            h = nnls(x, atoms, iters=10)
            rho = 0.7 ** (len(x) / total)                    # scikit-learn's forget factor, per share of the data
            a_stat = rho * a_stat + h.T @ h
            b_stat = rho * b_stat + h.T @ x
            for j in range(k):
                if a_stat[j, j] > 1e-12:
                    atoms[j] = (atoms[j] + (b_stat[j] - a_stat[j] @ atoms) / a_stat[j, j]).clamp(min=0)
            atoms = _unit(atoms)
            resid = ((x - h @ atoms) ** 2).sum(1)
            err += float(resid.sum())
            num += float((x ** 2).sum())
            worst = x[resid.argsort(descending=True)[:k]]
        unused = (a_stat.diagonal() <= 1e-6 * a_stat.diagonal().mean()).nonzero().flatten()
        if len(unused) and worst is not None and epoch < epochs - 1:
            atoms[unused] = _unit(worst[:len(unused)].clone())
            a_stat[unused], a_stat[:, unused], b_stat[unused] = 0, 0, 0
        if on_epoch:
            on_epoch(epoch, err / max(num, 1e-30))
    return Codebook(method="nmf", atoms=atoms.cpu().numpy(), channels=channels, signed=rows.signed)


def fit_sae(rows: Rows, k: int, channels: int, epochs: int, seed: int, top: int, lr: float = 2e-3,
            on_epoch: Callable[[int, float], None] | None = None) -> Codebook:
    """A TopK sparse autoencoder (see the module docstring): ``k`` atoms, ``top`` non-zero codes per row."""
    torch.manual_seed(seed)
    x0 = rows.sample(max(20 * k, 8000), seed)
    scale = float(x0.norm(dim=1).mean().clamp(min=1e-12))
    pick = torch.as_tensor(np.random.default_rng(seed).choice(len(x0), size=k, replace=len(x0) < k), device=x0.device)
    dec = torch.nn.Parameter(_unit(x0[pick] / scale + 1e-3))
    enc_w = torch.nn.Parameter(dec.detach().T.clone())
    enc_b = torch.nn.Parameter(torch.zeros(k, device=x0.device))
    opt = torch.optim.Adam([dec, enc_w, enc_b], lr=lr)
    for epoch in range(epochs):
        err = num = 0.0
        fired = torch.zeros(k, device=x0.device)
        worst = None
        for x in rows.batches(seed * 1000 + epoch):
            x = x / scale
            z = topk_codes(torch.relu(x @ enc_w + enc_b), top)
            resid = ((z @ dec - x) ** 2).sum(1)
            loss = resid.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                dec.data = _unit(dec.data.clamp(min=0))
                fired += (z > 0).sum(0)
                worst = x[resid.detach().argsort(descending=True)[:k]]
            err += float(loss.detach()) * len(x)
            num += float((x ** 2).sum())
        if epoch < 0.8 * epochs and worst is not None:
            _restart(fired, worst, dec, enc_w, enc_b)
        if on_epoch:
            on_epoch(epoch, err / max(num, 1e-30))
    return Codebook(method="sae", atoms=dec.detach().cpu().numpy(), channels=channels, signed=rows.signed,
                    sae={"enc_w": enc_w.detach().cpu().numpy(), "enc_b": enc_b.detach().cpu().numpy(),
                         "scale": scale, "top": int(top)})


def _restart(fired: torch.Tensor, worst: torch.Tensor, dec, enc_w, enc_b) -> None:
    """Latents that fired on no row of an epoch start again on the worst reconstructed rows (dead-latent
    resampling, as in Bricken et al. 2023), their encoder tied to the new atom."""
    dead = (fired == 0).nonzero().flatten()[:len(worst)]
    if not len(dead):
        return
    with torch.no_grad():
        dec.data[dead] = _unit(worst[:len(dead)].clamp(min=0) + 1e-6)
        enc_w.data[:, dead] = dec.data[dead].T
        enc_b.data[dead] = 0


def pca_basis(rows: Rows, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean ``(C',)`` and the top ``k`` principal directions ``(k, C')`` of the rows (one streaming pass)."""
    s = cov = None
    n = 0
    for x in rows.batches(0):
        x = x.double()
        s = x.sum(0) if s is None else s + x.sum(0)
        cov = x.T @ x if cov is None else cov + x.T @ x
        n += len(x)
    mean = s / max(n, 1)
    cov = cov / max(n, 1) - torch.outer(mean, mean)
    _, vecs = torch.linalg.eigh(cov)
    return mean.float(), vecs[:, -k:].flip(1).T.float()


def matched_cosine(a: np.ndarray, b: np.ndarray, absolute: bool = False) -> float:
    """Mean cosine of a one-to-one matching of the rows of ``a`` and ``b`` (greedy, largest first)."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sim = an @ bn.T
    sim = np.abs(sim) if absolute else sim
    out = []
    sim = sim.copy()
    for _ in range(min(sim.shape)):
        i, j = np.unravel_index(np.argmax(sim), sim.shape)
        out.append(sim[i, j])
        sim[i, :], sim[:, j] = -np.inf, -np.inf
    return float(np.mean(out))
