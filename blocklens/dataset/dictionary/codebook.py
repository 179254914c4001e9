"""A fitted dictionary as arrays, and what every phase does with it: encode rows, reconstruct, split activations.

Rows live in the layer's *non-negative* space: a position's channel vector ``a`` (``C``) for a layer that never goes
below zero, ``[relu(a), relu(-a)]`` (``2C``) for a signed one (as the groups view and class concepts do). A
:class:`Codebook` holds ``atoms`` (``K``, ``C'``): non-negative, unit-norm rows; a row's *codes* (``K``, >= 0) say
how much of each atom it holds, ``codes @ atoms`` reconstructs it.

- ``nmf``: codes are the non-negative least-squares fit of the row on the atoms (coordinate descent, warm-started).
- ``sae``: codes are a TopK sparse autoencoder's: ``TopK(relu(a / scale @ enc_w + enc_b)) * scale``; ``top``
  codes are non-zero per row.

An atom's *share* of an image's activations is the exact proportional split of
:func:`~blocklens.analyses.factorize.split_activations`: each element goes to the atoms in proportion to what each
reconstructs there (the positive and negative parts separately for a signed layer), so the shares of all atoms plus
a residual add up to the activations. Everything here is torch and runs on the codebook's device.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Codebook", "nonneg_rows", "nnls", "fold_atoms"]


def nonneg_rows(x: torch.Tensor, signed: bool) -> torch.Tensor:
    """``(n, C)`` channel vectors -> ``(n, C')`` rows of the non-negative space."""
    return torch.cat([x.clamp(min=0), (-x).clamp(min=0)], 1) if signed else x


def fold_atoms(atoms: np.ndarray, channels: int) -> np.ndarray:
    """``(K, C')`` atoms -> ``(K, C)`` signed directions in the layer's channel space (positive minus negative part)."""
    a = np.asarray(atoms)
    return a[:, :channels] - a[:, channels:] if a.shape[1] == 2 * channels else a


def nnls(x: torch.Tensor, atoms: torch.Tensor, iters: int = 30, init: torch.Tensor | None = None) -> torch.Tensor:
    """Non-negative codes ``(n, K)`` minimizing ``|x - codes @ atoms|`` (HALS coordinate descent, ``iters`` sweeps)."""
    gram = atoms @ atoms.T                                       # (K, K)
    xa = x @ atoms.T                                             # (n, K)
    diag = gram.diagonal().clamp(min=1e-12)
    h = (xa / diag).clamp(min=0) / max(atoms.shape[0], 1) if init is None else init.clone()
    for _ in range(iters):
        for j in range(atoms.shape[0]):
            h[:, j] = (h[:, j] + (xa[:, j] - h @ gram[:, j]) / diag[j]).clamp(min=0)
    return h


@dataclass
class Codebook:
    """``method``, ``atoms`` (K, C'), ``channels`` (C), ``signed``; for ``sae`` the encoder ``enc_w`` (C', K),
    ``enc_b`` (K,), ``scale`` and ``top`` (non-zero codes per row). Picklable (numpy arrays): it travels to the
    workers that measure removals."""

    method: str
    atoms: np.ndarray
    channels: int
    signed: bool
    sae: dict = field(default_factory=dict)      # enc_w, enc_b, scale, top (sae only)

    @property
    def k(self) -> int:
        return int(self.atoms.shape[0])

    @property
    def directions(self) -> np.ndarray:
        return fold_atoms(self.atoms, self.channels)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"atoms": self.atoms.astype(np.float32), "channels": np.int64(self.channels),
               "signed": np.bool_(self.signed), "method": np.array(self.method)}
        for name, v in self.sae.items():
            out["sae_" + name] = np.asarray(v)
        return out

    @classmethod
    def from_arrays(cls, a: dict) -> "Codebook":
        sae = {k[4:]: (a[k] if a[k].ndim else a[k].item()) for k in a if k.startswith("sae_")}
        return cls(method=str(a["method"]), atoms=np.asarray(a["atoms"], np.float32), channels=int(a["channels"]),
                   signed=bool(a["signed"]), sae=sae)

    def tensors(self, device) -> dict:
        out = {"atoms": torch.as_tensor(self.atoms, dtype=torch.float32, device=device)}
        if self.method == "sae":
            out["enc_w"] = torch.as_tensor(self.sae["enc_w"], dtype=torch.float32, device=device)
            out["enc_b"] = torch.as_tensor(self.sae["enc_b"], dtype=torch.float32, device=device)
        return out

    def encode(self, rows: torch.Tensor, t: dict | None = None) -> torch.Tensor:
        """Codes ``(n, K)`` of non-negative rows ``(n, C')``."""
        t = t or self.tensors(rows.device)
        rows = rows.float()
        if self.method == "nmf":
            return nnls(rows, t["atoms"])
        scale = float(self.sae["scale"])
        z = torch.relu(rows / scale @ t["enc_w"] + t["enc_b"])
        return topk_codes(z, int(self.sae["top"])) * scale

    def encode_acts(self, act: torch.Tensor, t: dict | None = None) -> torch.Tensor:
        """Codes ``(H*W, K)`` of one image's activations ``(C, H, W)``."""
        c = act.shape[0]
        return self.encode(nonneg_rows(act.reshape(c, -1).T.float(), self.signed), t)

    def shares(self, act: torch.Tensor, codes: torch.Tensor, which, t: dict | None = None) -> torch.Tensor:
        """The exact shares ``(len(which), C, H, W)`` of atoms ``which`` in one image's activations ``act``
        ``(C, H, W)`` given its ``codes`` ``(H*W, K)`` (see the module docstring)."""
        t = t or self.tensors(act.device)
        c, h, w = act.shape
        x = act.reshape(c, -1).T.float()                                  # (HW, C)
        xs = nonneg_rows(x, self.signed)                                  # (HW, C')
        total = codes @ t["atoms"]                                        # (HW, C')
        ratio = torch.where(total > 0, xs / total.clamp(min=1e-30), torch.zeros_like(xs))
        idx = torch.as_tensor(list(which), dtype=torch.long, device=act.device)
        part = codes[:, idx].T[:, :, None] * t["atoms"][idx][:, None, :] * ratio[None]   # (n, HW, C')
        if self.signed:
            part = part[..., :c] - part[..., c:]
        return part.permute(0, 2, 1).reshape(len(idx), c, h, w).to(act.dtype)


def topk_codes(z: torch.Tensor, top: int) -> torch.Tensor:
    """``z`` with all but each row's ``top`` largest entries set to zero."""
    if top >= z.shape[1]:
        return z
    vals, idx = z.topk(top, dim=1)
    return torch.zeros_like(z).scatter_(1, idx, vals)
