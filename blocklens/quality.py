"""How good are these icons? Figures a user can check, cheap enough to show beside every set of pictures.

For a set of icons (feature visualizations of units of one model), :func:`assess` measures

- **specificity**: each icon is fed to the model (at its own size, no transforms) and its unit's value (the
  objective it was optimized for: a channel's spatial mean, a neuron, a direction, a logit) is compared with
  that unit's value on every *other* icon of the set. An icon is specific when its own unit is highest on it
  ("the target unit wins in its own visualization"). ``margin`` is own / best other (above 1 is specific).
- **strength**: the unit's value on its icon against the best value of the same statistic over the bundled
  photographs (224 px): how far past natural images the icon drives its unit.
- **natural-image statistics** of the pixels, next to the same figures of the bundled photographs resized to
  the icon's size: RMS contrast (standard deviation of luma in [0, 1]), colourfulness (Hasler and Suesstrunk
  2003, on 0..255 values), the slope of the radially averaged power spectrum of luma (natural images: about
  -2), and high-frequency energy (the share of the luma power above a quarter of the sampling frequency:
  checkerboard speckle raises it).
- **flags**: *dead* when the unit's value is the same on every photograph and on every icon (no input moves
  it: shown as dead, never as a grey picture), *saturated* when the unit sits at its layer's cap (ReLU6 at 6,
  Hardtanh at its max) on most positions of its own icon, *no preferred stimulus* when a blank image (one
  constant grey, five levels tried) drives the unit to at least 99% of its value on its own icon: its maximum
  is the absence of its input (a depthwise unit whose kernel is all negative sits at its batch-norm bias
  wherever its input channel is silent), so its icon ties with unrelated icons and shows nothing it prefers
  (shown as a tile with that figure, never as the picture).

:func:`transferability` asks an independently trained model (the judge) to classify jittered views of class
renders: real class features transfer, adversarial noise mostly does not.

Everything here is measured offline and costs one forward pass over the icons and the photographs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .errors import BlocklensError

#: Frequencies above this (cycles per pixel; Nyquist is 0.5) count as high-frequency energy.
HF_CUTOFF = 0.25
#: A unit whose value varies by less than this over the photographs and the icons is dead.
DEAD_TOLERANCE = 1e-6
#: A live unit's icon with more than this share of its steps at zero gradient is stuck (near its starting noise).
STUCK_FRACTION = 0.10
#: A unit that a blank image drives to at least this share of its value on its own icon has no preferred stimulus.
BLANK_TIE = 0.99
#: The grey levels of the blank images.
BLANK_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


# --- pixel statistics ---------------------------------------------------------------------------------------


def _as_float_images(images) -> np.ndarray:
    """(N, H, W, 3) float64 in [0, 1] from uint8 / float arrays, a list of them, or PIL images."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    arrs = []
    for im in images:
        a = np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im)
        a = a[..., :3]
        arrs.append(a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64))
    if len({a.shape for a in arrs}) != 1:
        raise BlocklensError(f"images must share one size, got {sorted({a.shape for a in arrs})}")
    return np.stack(arrs)


def _luma(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def rms_contrast(images) -> np.ndarray:
    """Standard deviation of luma (in [0, 1]) per image, (N,)."""
    lum = _luma(_as_float_images(images))
    return lum.reshape(len(lum), -1).std(1)


def colourfulness(images) -> np.ndarray:
    """Hasler and Suesstrunk's colourfulness per image (on 0..255 values), (N,)."""
    x = _as_float_images(images) * 255.0
    rg = (x[..., 0] - x[..., 1]).reshape(len(x), -1)
    yb = (0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]).reshape(len(x), -1)
    return np.sqrt(rg.std(1) ** 2 + yb.std(1) ** 2) + 0.3 * np.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)


def _radial_power(lum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of one mean-subtracted, Hann-windowed luma image: (freqs, power)."""
    h, w = lum.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    f = np.fft.fftshift(np.fft.fft2((lum - lum.mean()) * win))
    power = np.abs(f) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    r = np.sqrt(fy ** 2 + fx ** 2)
    step = 1.0 / max(h, w)
    bins = np.round(r / step).astype(int)
    n = int(0.5 / step)  # up to Nyquist along an axis
    sums = np.bincount(bins.ravel(), power.ravel(), minlength=n + 1)[1:n + 1]
    counts = np.bincount(bins.ravel(), minlength=n + 1)[1:n + 1]
    return np.arange(1, n + 1) * step, sums / np.maximum(counts, 1)


def spectrum_slope(images) -> np.ndarray:
    """Slope of log power vs log frequency of luma, fitted from 2 cycles per image to Nyquist, (N,)."""
    out = []
    for lum in _luma(_as_float_images(images)):
        f, p = _radial_power(lum)
        keep = (f >= 2.0 / max(lum.shape)) & (p > 0)
        out.append(np.polyfit(np.log(f[keep]), np.log(p[keep]), 1)[0] if keep.sum() >= 3 else float("nan"))
    return np.asarray(out)


def hf_energy(images, cutoff: float = HF_CUTOFF) -> np.ndarray:
    """Share of the (windowed, mean-subtracted) luma power above ``cutoff`` cycles per pixel, (N,)."""
    out = []
    for lum in _luma(_as_float_images(images)):
        h, w = lum.shape
        win = np.outer(np.hanning(h), np.hanning(w))
        power = np.abs(np.fft.fft2((lum - lum.mean()) * win)) ** 2
        r = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
        total = power.sum()
        out.append(float(power[r > cutoff].sum() / total) if total > 0 else 0.0)
    return np.asarray(out)


def image_stats(images) -> dict[str, np.ndarray]:
    """Every pixel statistic per image: ``contrast``, ``colourfulness``, ``slope``, ``hf``."""
    return {"contrast": rms_contrast(images), "colourfulness": colourfulness(images),
            "slope": spectrum_slope(images), "hf": hf_energy(images)}


@lru_cache(maxsize=8)
def photo_stats(size: int) -> dict[str, float]:
    """The medians of :func:`image_stats` over the bundled photographs, centre-cropped and resized to ``size``."""
    from .images import bundled_images, load_image

    photos = []
    for path in bundled_images().values():
        im = load_image(path)
        s = min(im.size)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        photos.append(np.asarray(im.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)))
    return {k: float(np.median(v)) for k, v in image_stats(photos).items()}


# --- unit statistics ----------------------------------------------------------------------------------------


def _unit_values(model, targets, x: torch.Tensor) -> np.ndarray:
    """values[i, j]: target j's objective on image i of ``x`` ((N, 3, H, W) in [0, 1], no transforms)."""
    from .optvis import objectives as obj

    layers = sorted({t.layer for t in targets} - {obj.OUTPUT})
    needs_output = any(t.layer == obj.OUTPUT for t in targets)
    with torch.no_grad():
        inp = model.input_from_rgb(x.to(model.device))
        if needs_output:
            with model.probe(layers) as probe:
                out = probe.run(inp, stop=False)
                acts = dict(probe.activations)
            acts[obj.OUTPUT] = out
        else:
            acts = model.activations(inp, layers) if layers else {}
        ctx = obj.Context(acts, x)
        return np.stack([t.objective(batch=None)(ctx).float().cpu().numpy() for t in targets], axis=1)


def _caps(model, targets) -> list[float | None]:
    """The clip value of each target's layer when its output is clipped above (ReLU6, Hardtanh), else None."""
    from .optvis.rescue import rectifier_cap

    from .optvis import objectives as obj

    modules = dict(model.module.named_modules())
    caps = []
    for t in targets:
        m = modules.get(model.layer(t.layer).module) if t.layer != obj.OUTPUT else None
        up = rectifier_cap(m) if m is not None else False
        caps.append(up if isinstance(up, float) else None)
    return caps


@lru_cache(maxsize=4)
def _photo_batch(size: int) -> torch.Tensor:
    from .images import bundled_images, load_image

    out = []
    for path in bundled_images().values():
        im = load_image(path)
        s = min(im.size)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


@dataclass
class IconQuality:
    """Figures for a set of icons; per-icon arrays are in the order the icons were given."""

    labels: list[str]
    specific: np.ndarray       # (N,) bool: own unit highest on its own icon
    margin: np.ndarray         # (N,) own value / best other icon's value (inf when no other icon)
    own: np.ndarray            # (N,) the unit's value on its own icon
    best_photo: np.ndarray     # (N,) the best value of the same statistic over the photographs
    strength: np.ndarray       # (N,) own / best_photo
    dead: np.ndarray           # (N,) bool
    saturated: np.ndarray      # (N,) bool
    stats: dict[str, np.ndarray]
    photos: dict[str, float]   # the photographs' medians of the same pixel statistics
    extra: dict[str, Any] = field(default_factory=dict)
    #: (N,) share of each icon's optimization steps with no gradient at all (NaN when the icon does not say)
    zero_grad: np.ndarray | None = None
    #: (N,) the unit's best value on a blank (constant grey) image, and the flag it raises (see the module docstring)
    blank: np.ndarray | None = None
    no_preference: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def live(self) -> np.ndarray:
        return ~self.dead

    def summary(self) -> dict[str, Any]:
        """Medians and counts: what a view prints beside its icons."""
        live = self.live
        n_live = int(live.sum())

        def med(a):
            a = np.asarray(a, dtype=np.float64)[live]
            a = a[np.isfinite(a)]
            return float(np.median(a)) if len(a) else None

        return {"icons": len(self), "live": n_live, "dead": int(self.dead.sum()),
                "saturated": int(self.saturated.sum()),
                "no_preference": int(self.no_preference.sum()) if self.no_preference is not None else 0,
                "specific": int(self.specific[live].sum()),
                "specificity": (float(self.specific[live].mean()) if n_live else None),
                "strength": med(self.strength), "contrast": med(self.stats["contrast"]),
                "colourfulness": med(self.stats["colourfulness"]), "slope": med(self.stats["slope"]),
                "hf": med(self.stats["hf"]), "photos": dict(self.photos), **self._zero_summary(), **self.extra}

    def _zero_summary(self) -> dict[str, Any]:
        z = np.full(len(self), np.nan) if self.zero_grad is None else np.asarray(self.zero_grad, dtype=np.float64)
        known = np.isfinite(z) & self.live
        if not known.any():
            return {"zero_grad_max": None, "stuck": None}
        return {"zero_grad_max": float(z[known].max()), "stuck": int((z[known] > STUCK_FRACTION).sum())}

    def per_icon(self, i: int) -> dict[str, Any]:
        """The figures of icon ``i`` (JSON-ready)."""
        def f(v):
            v = float(v)
            return round(v, 4) if math.isfinite(v) else None

        z = None if self.zero_grad is None else self.zero_grad[i]
        blank = self.blank is not None and self.no_preference is not None
        return {"specific": bool(self.specific[i]), "margin": f(self.margin[i]), "strength": f(self.strength[i]),
                "dead": bool(self.dead[i]), "saturated": bool(self.saturated[i]),
                "no_preference": bool(self.no_preference[i]) if blank else False,
                "blank": f(self.blank[i]) if blank else None, "own": f(self.own[i]),
                "zero_grad": f(z) if z is not None else None,
                **{k: f(v[i]) for k, v in self.stats.items()}}

    def line(self) -> str:
        """One line for a terminal or a caption."""
        s = self.summary()
        if not s["live"]:
            return f"{s['icons']} icons, all dead (no input moves these units)"
        p = s["photos"]
        parts = [f"specific {s['specific']}/{s['live']}",
                 f"strength {s['strength']:.1f}x the best photo" if s["strength"] is not None else None,
                 f"contrast {s['contrast']:.2f} (photos {p['contrast']:.2f})",
                 f"colourfulness {s['colourfulness']:.0f} ({p['colourfulness']:.0f})",
                 f"spectrum slope {s['slope']:.1f} ({p['slope']:.1f})",
                 f"high-frequency energy {100 * s['hf']:.1f}% ({100 * p['hf']:.1f}%)"]
        if s["dead"]:
            parts.append(f"{s['dead']} dead")
        if s["saturated"]:
            parts.append(f"{s['saturated']} saturated")
        if s["no_preference"]:
            parts.append(f"{s['no_preference']} with no preferred stimulus (a blank image drives them as far)")
        if s.get("zero_grad_max") is not None:
            parts.append(f"zero-gradient steps at most {100 * s['zero_grad_max']:.0f}%"
                         + (f" ({s['stuck']} stuck above {100 * STUCK_FRACTION:.0f}%)" if s["stuck"] else ""))
        return ", ".join(x for x in parts if x)


def assess(model, icons: Sequence, targets: Sequence | None = None, *, photo_size: int = 224) -> IconQuality:
    """Measure a set of icons of ``model``: see the module docstring for each figure.

    ``icons``: :class:`~blocklens.store.Icon` objects (their metadata names the target), or images
    ((H, W, 3) uint8 arrays / PIL images of one size) with ``targets`` (target strings or
    :class:`~blocklens.optvis.targets.Target`) in the same order.
    """
    from .optvis.targets import parse_target

    if not len(icons):
        raise BlocklensError("assess() needs at least one icon")
    if targets is None:
        try:
            targets = [icon.meta["target"] for icon in icons]
        except (AttributeError, KeyError):
            raise BlocklensError("pass targets= when the icons are plain images (store icons name their target)")
        images = [icon.image for icon in icons]
    else:
        images = [getattr(im, "image", im) for im in icons]
    if len(targets) != len(icons):
        raise BlocklensError(f"{len(icons)} icons but {len(targets)} targets")
    parsed = [parse_target(model, t) for t in targets]
    n = len(parsed)
    sizes = [im.size[::-1] if isinstance(im, Image.Image) else np.asarray(im).shape[:2] for im in images]
    groups: dict[tuple, list[int]] = {}
    for i, hw in enumerate(sizes):  # icons of other recipes (a pack's 128 px beside 56 px renders): each at its size
        groups.setdefault(tuple(hw), []).append(i)
    table = np.zeros((n, n))  # table[i, j]: unit j's value on icon i
    stats: dict[str, np.ndarray] = {}
    saturated = np.zeros(n, dtype=bool)
    caps = _caps(model, parsed)
    for hw, idx in groups.items():
        pix = _as_float_images([images[i] for i in idx])
        x = torch.from_numpy(pix).permute(0, 3, 1, 2).float()
        table[idx] = _unit_values(model, parsed, x)
        for k, v in image_stats(pix).items():
            stats.setdefault(k, np.zeros(n))[idx] = v
        capped = [i for i in idx if caps[i] is not None and parsed[i].kind in ("channel", "neuron")]
        if capped:
            layers = sorted({parsed[i].layer for i in capped})
            with torch.no_grad():
                acts = model.activations(model.input_from_rgb(x.to(model.device)), layers)
            for row, i in enumerate(idx):
                if i in capped:
                    a = acts[parsed[i].layer][row, parsed[i].index]
                    saturated[i] = bool((a >= caps[i] - 1e-4).float().mean() > 0.5)
    own = np.diag(table).copy()
    if n > 1:
        others = np.where(np.eye(n, dtype=bool), -np.inf, table).max(0)
    else:
        others = np.full(1, -np.inf)
    specific = own > others
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.where(others > 0, own / others, np.inf)
    photo_vals = _unit_values(model, parsed, _photo_batch(photo_size))   # (photos, N units)
    best_photo = photo_vals.max(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = np.where(best_photo > 0, own / best_photo, np.nan)
    spread = np.maximum(np.ptp(photo_vals, 0), np.ptp(table, 0))
    dead = spread <= DEAD_TOLERANCE * np.maximum(1.0, np.abs(photo_vals).max(0))
    main_size = max(groups, key=lambda hw: len(groups[hw]))[0]
    zero = np.array([_zero_fraction(im) for im in icons], dtype=np.float64)
    specific &= ~dead
    blank = _unit_values(model, parsed, _blank_batch(photo_size)).max(0)
    no_preference = ~dead & (own > 0) & (blank >= BLANK_TIE * own)
    return IconQuality(labels=[t.label for t in parsed], specific=specific, margin=margin, own=own,
                       best_photo=best_photo, strength=strength, dead=dead, saturated=saturated, stats=stats,
                       photos=photo_stats(main_size), zero_grad=zero, blank=blank, no_preference=no_preference)


def _blank_batch(size: int) -> torch.Tensor:
    """Constant grey images at :data:`BLANK_LEVELS` (RGB in [0, 1])."""
    return torch.stack([torch.full((3, size, size), float(v)) for v in BLANK_LEVELS])


def _zero_fraction(icon) -> float:
    """The share of an icon's optimization steps that got no gradient (from its store metadata; NaN if unknown)."""
    meta = getattr(icon, "meta", None) or {}
    steps = (meta.get("recipe") or {}).get("steps")
    if "zero_grad_steps" not in meta or not steps:
        return float("nan")
    return float(meta["zero_grad_steps"]) / float(steps)


def transferability(judge, classes: Sequence, images: Sequence, *, views: int = 8, seed: int = 0,
                    size: int | None = None) -> dict[str, Any]:
    """How often ``judge`` (another model) puts each class render's class first over jittered views.

    ``classes``: class names or indices of ``judge``'s labels, one per image. Each view is the render through
    the standard transforms (pad, jitter, scale, rotate), resized to ``size`` (default: 224). Returns
    ``{"hits": [per class], "views": views, "rate": fraction of all views}``.
    """
    from .optvis.transforms import standard_transforms

    if len(classes) != len(images):
        raise BlocklensError(f"{len(images)} renders but {len(classes)} classes")
    size = size or 224
    tf = standard_transforms()
    gen = torch.Generator().manual_seed(seed)
    pix = torch.from_numpy(_as_float_images([getattr(im, "image", im) for im in images])).permute(0, 3, 1, 2).float()
    hits = []
    for cls, img in zip(classes, pix):
        idx = judge.class_index(cls)
        batch = torch.cat([torch.nn.functional.interpolate(tf(img[None], generator=gen), size=(size, size),
                                                           mode="bilinear", align_corners=False, antialias=True)
                           for _ in range(views)])
        with torch.no_grad():
            top1 = judge(judge.input_from_rgb(batch.to(judge.device))).argmax(1).cpu()
        hits.append(int((top1 == idx).sum()))
    return {"hits": hits, "views": views, "rate": sum(hits) / (views * len(hits))}


# --- semantic fidelity: does an icon show what the reference icon of its unit shows? -------------------------


#: The judge of semantic fidelity by default: a model that is not the one explained.
JUDGE = "efficientnet_lite2"


@lru_cache(maxsize=2)
def _default_judge(name: str = JUDGE):
    from .models import load_model

    return load_model(name)


def judge_layer(judge) -> str:
    """The judge layer fidelity reads: its last spatial block (:func:`~blocklens.recipes.layer_candidates`)."""
    from .recipes import layer_candidates

    return layer_candidates(judge)[-1].name


def judge_features(judge, images, *, layer: str | None = None, size: int | None = None) -> np.ndarray:
    """``(N, C)``: each image's activations in ``judge``'s ``layer`` (default :func:`judge_layer`), averaged
    over positions, each image resized to ``size`` (default the judge's input size) so that icons of different
    sizes are compared alike."""
    layer = layer or judge_layer(judge)
    size = int(size or judge.input_size)
    feats = []
    for im in images:
        pix = _as_float_images([getattr(im, "image", im)])
        x = torch.from_numpy(pix).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=x.shape[-1] > size)
        with torch.no_grad():
            a = judge.activations(judge.input_from_rgb(x.to(judge.device)), [layer])[layer]
        feats.append(a.float().mean(dim=(2, 3)).cpu().numpy()[0])
    return np.stack(feats)


def retrieval(judge, queries: Sequence, references: Sequence, *, layer: str | None = None) -> dict[str, Any]:
    """How often each query icon's nearest reference (cosine, in the judge's features) is its own unit's:
    ``queries[i]`` and ``references[i]`` are icons of the same unit. Returns ``{"top1", "top3", "n", "ranks"}``
    (``ranks[i]``: 1 when query i finds its own reference first)."""
    if len(queries) != len(references) or len(queries) < 2:
        raise BlocklensError(f"retrieval needs as many queries as references, at least 2 (got {len(queries)} "
                             f"and {len(references)})")
    sim = _cosines(judge_features(judge, queries, layer=layer), judge_features(judge, references, layer=layer))
    return _ranked(sim)


def _cosines(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    return q @ r.T


def _ranked(sim: np.ndarray) -> dict[str, Any]:
    """Retrieval figures from ``sim[i, j]``, query i against reference j (i's own reference is j = i)."""
    ranks = np.array([1 + int((sim[i] > sim[i, i]).sum()) for i in range(len(sim))])
    return {"top1": float((ranks == 1).mean()), "top3": float((ranks <= 3).mean()), "n": len(sim),
            "ranks": ranks.tolist()}


def semantic_fidelity(model, layer: str, units: Sequence, recipes: dict[str, dict], *, judge=None,
                      reference: dict | None = None, ceiling_seed: int = 1, store=None,
                      progress: bool | None = None) -> dict[str, Any]:
    """Top-1 / top-3 retrieval of each unit's icon among the reference icons of the same ``units`` of ``layer``,
    for every recipe in ``recipes`` (name -> icon recipe options, e.g. a preset's ``preset_options(p)``), with
    the ceiling measured in the same run: the reference recipe with seed ``ceiling_seed``. A recipe may name the
    preset it starts from (``{"preset": "lucid", "size": 56, "steps": 48}``; default "default").

    ``reference``: the reference icon recipe (default: the "default" preset's). ``judge``: a Model or zoo name
    (default :data:`JUDGE`, EfficientNet-Lite2). Icons come from ``store`` (an IconStore or folder; the
    reference pack beneath it), rendered where missing. Returns ``{"ceiling": {...}, name: {...}, "judge",
    "layer", "units"}``, each entry with ``top1``, ``top3``, ``ranks`` and ``seconds_per_icon`` (time spent
    rendering; 0 when every icon came from the store)."""
    import time

    from .iconcache import icons
    from .recipes import preset_options

    if len(units) < 2:
        raise BlocklensError(f"semantic_fidelity needs at least 2 units of {layer!r}, got {len(units)}")
    if judge is None or isinstance(judge, str):
        judge = _default_judge(judge or JUDGE)
    reference = dict(reference or preset_options("default"))

    def get(recipe):
        t = time.perf_counter()
        got = icons(model, layer, list(units), store=store, progress=progress, batch=max(1, len(units)),
                    **{"preset": "default", **recipe})
        spent = time.perf_counter() - t
        rendered = sum(1 for i in got if i.source == "rendered")
        return got, (spent / rendered if rendered else 0.0)

    refs, ref_t = get(reference)
    out: dict[str, Any] = {"judge": getattr(judge, "name", str(judge)), "judge_layer": judge_layer(judge),
                           "layer": layer, "units": [int(u) if not isinstance(u, str) else u for u in units],
                           "reference_seconds_per_icon": ref_t}
    todo = {"ceiling": {**reference, "seed": int(reference.get("seed", 0)) + ceiling_seed}, **recipes}
    for name, recipe in todo.items():
        got, sec = get(recipe)
        out[name] = {**retrieval(judge, got, refs), "seconds_per_icon": sec,
                     "zero_grad_max": max((i.meta.get("zero_grad_steps", 0) / max(1, (i.meta.get("recipe") or {}).get("steps", 1))
                                           for i in got), default=0.0)}
    return out


def grid_fidelity(judge, grid, reference, *, layer: str | None = None) -> dict[str, Any]:
    """Semantic fidelity of an activation grid: each cell retrieves among the cells of ``reference`` (the same
    image and layer at the reference recipe). Returns :func:`retrieval`'s figures over the cells, plus
    ``near1``: the share whose nearest reference cell is its own position or one of its 8 neighbours (neighbouring
    positions often see the same thing)."""
    if grid.shape != reference.shape:
        raise BlocklensError(f"grids of {grid.shape} and {reference.shape} cells: give grids of the same layer")
    h, w = grid.shape

    def cells(g):
        return [np.clip(np.round(c * 255), 0, 255).astype(np.uint8) for c in g.cells.reshape(h * w, *g.cells.shape[2:])]

    sim = _cosines(judge_features(judge, cells(grid), layer=layer), judge_features(judge, cells(reference), layer=layer))
    out = _ranked(sim)
    best = sim.argmax(1)
    near = [abs(int(b) // w - i // w) <= 1 and abs(int(b) % w - i % w) <= 1 for i, b in enumerate(best)]
    out["near1"] = float(np.mean(near))
    return out
