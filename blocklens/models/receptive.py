"""The receptive field of a layer's position: its footprint on the model's input, measured by gradients.

:func:`receptive_field` is what dataset examples crop at; a :class:`~blocklens.models.Model` keeps each layer's in
:meth:`~blocklens.models.Model.receptive_field` (measured once, or taken from an index's manifest).
"""
from __future__ import annotations

import math

__all__ = ["receptive_field"]


def receptive_field(model, layer: str, trials: int = 2, mass: float = 0.8) -> dict:
    """The input footprint of one position of ``layer``: the gradient of its centre position's summed
    activation on random inputs. Returns ``size`` (the side in input pixels of the smallest square around the
    position's centre that holds ``mass`` of the gradient's absolute mass: the effective receptive field),
    ``extent`` (the side of the square holding every nonzero gradient: the theoretical one, clipped to the
    input) and ``stride`` ``[sy, sx]`` (input pixels per grid step)."""
    import torch

    info = model.layer(layer)
    S = model.input_size
    if not info.spatial:
        return {"size": S, "extent": S, "stride": [S, S], "grid": [1, 1]}
    H, W = info.height, info.width
    cy, cx = H // 2, W // 2
    sy, sx = S / H, S / W
    total = torch.zeros(S, S)
    gen = torch.Generator().manual_seed(0)
    for _ in range(trials):
        x = (torch.randn(1, model.input_channels, S, S, generator=gen) * 0.5).to(model.device).requires_grad_(True)
        with model.probe([info.name], grad=True) as probe:
            probe.run(x, stop=True)
            a = probe.activations[info.name]
            (g,) = torch.autograd.grad(a[0, :, cy, cx].abs().sum(), x)
        total += g.detach().abs().sum(1)[0].cpu()
    ccy, ccx = (cy + 0.5) * sy, (cx + 0.5) * sx
    ys = torch.arange(S).float()[:, None] + 0.5
    xs = torch.arange(S).float()[None, :] + 0.5
    dist = torch.maximum((ys - ccy).abs(), (xs - ccx).abs())  # Chebyshev distance to the centre
    t = total.flatten()
    d = dist.flatten()
    if float(t.sum()) <= 0:
        return {"size": S, "extent": S, "stride": [sy, sx], "grid": [H, W]}
    order = torch.argsort(d)
    cum = torch.cumsum(t[order], 0) / t.sum()
    r = float(d[order][int(torch.searchsorted(cum, torch.tensor(mass)))])
    r_all = float(d[t > 0].max())
    size = int(min(S, max(2 * math.ceil(r), math.ceil(max(sy, sx)))))
    return {"size": size, "extent": int(min(S, 2 * math.ceil(r_all))), "stride": [sy, sx], "grid": [H, W],
            "mass": mass}
