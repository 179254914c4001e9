"""Icons: feature visualizations fetched from the store, rendered in batches only where missing.

``icons(model, "blocks.9", range(16))`` returns one :class:`~blocklens.store.Icon` per unit, in order. Each icon
is keyed by the model's weight fingerprint, the layer, the unit and the recipe (size, steps, lr, seed, ...), so a
change to any of them renders anew and nothing stale is ever served. Missing icons are rendered ``batch`` at a
time with ``same_init=True``: an icon is the same image whichever batch it was rendered in.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import BlocklensError
from .optvis.render import render
from .optvis.targets import Target, channel_target, logit_target, parse_target
from .recipes import icon_recipe
from .store import Icon, IconStore, icon_key


def _targets(model, layer_or_targets, units) -> list[Target]:
    if units is None:
        items = [layer_or_targets] if isinstance(layer_or_targets, (str, Target)) else list(layer_or_targets)
        return [parse_target(model, t) for t in items]
    if isinstance(layer_or_targets, str) and layer_or_targets.lower() in ("logit", "logits"):
        return [logit_target(model, u) for u in units]
    out = []
    for u in units:
        if isinstance(u, (int, np.integer)):
            out.append(channel_target(model, layer_or_targets, int(u)))
        else:  # "12" or "12@3,4"
            out.append(parse_target(model, f"{layer_or_targets}:{u}"))
    return out


def icon_key_for(model, target: Target, recipe: dict) -> str:
    return icon_key(model.fingerprint, target.layer, target.unit, recipe)


def render_batch(model, targets: Sequence[Target], recipe: dict, *, progress: bool | None = None,
                 desc: str = "icons") -> list[tuple[np.ndarray, dict]]:
    """Render ``targets`` as one batch with the full ``recipe`` (see :func:`recipe_for`), ``same_init=True``
    so each image is the one any other batch would give; return ``(uint8 pixels, metadata)`` per target, the
    metadata being what :func:`icons` stores with each icon (without ``key``)."""
    result = render(model, list(targets), same_init=True, progress=progress, desc=desc, **recipe)
    dead = result.dead()
    out = []
    for i, t in enumerate(targets):
        meta = {"model": model.name, "fingerprint": model.fingerprint, "layer": t.layer, "unit": t.unit,
                "target": t.spec, "label": t.label, "recipe": recipe,
                "objective": float(result.final[i]), "objective_start": float(result.history[0, i]),
                "zero_grad_steps": int(result.zero_grad_steps[i]), "dead": bool(dead[i])}
        out.append((result.uint8(i), meta))
    return out


def icons(model, layer_or_targets: str | Sequence, units: Iterable | None = None, *,
          store: IconStore | str | None | bool = None, batch: int = 8, progress: bool | None = None,
          refresh: bool = False, on_batch: Callable[[int, int], None] | None = None, preset: str | None = None,
          **recipe_overrides) -> list[Icon]:
    """Icons for ``units`` of ``layer`` (channels as ints, neurons as ``"C@X,Y"``, classes when the layer is
    ``"logit"``), or for a list of targets when ``units`` is None.

    ``store``: an :class:`IconStore`, a folder, None for the default store, or False to render without caching.
    ``refresh=True`` re-renders and overwrites. ``on_batch(done, total)`` is called before the first render and
    after each batch (``total`` counts only the icons that had to be rendered), for progress in other front ends.
    The recipe is ``preset``'s (default: :func:`~blocklens.recipes.default_preset`, "quick" on a CPU and
    "default" on a GPU, as every entry point) with single options (``size``, ``steps``, ``seed``, ...) overridden
    (an option given as None keeps the preset's), see :func:`~blocklens.recipes.icon_recipe`.
    """
    if batch < 1:
        raise BlocklensError(f"batch must be at least 1, got {batch}")
    recipe = icon_recipe(preset, model, **recipe_overrides)  # refuses an unknown preset or option
    targets = _targets(model, layer_or_targets, units)
    cache = store is not False
    if cache and not isinstance(store, IconStore):
        store = IconStore(store)
    keys = [icon_key_for(model, t, recipe) for t in targets]
    found: dict[str, Icon] = {}
    if cache and not refresh:
        for k in dict.fromkeys(keys):
            icon = store.get(k)
            if icon is not None:
                found[k] = icon
    missing = [(k, t) for k, t in dict(zip(keys, targets)).items() if k not in found]
    if on_batch is not None:
        on_batch(0, len(missing))
    for start in range(0, len(missing), batch):
        chunk = missing[start:start + batch]
        rendered = render_batch(model, [t for _, t in chunk], recipe, progress=progress,
                                desc=f"icons {start + len(chunk)}/{len(missing)}")
        for (k, t), (pixels, meta) in zip(chunk, rendered):
            if cache:
                store.put(k, pixels, meta)  # written as soon as its batch is done: nothing lost on failure
            found[k] = Icon(pixels, dict(meta, key=k), k, source="rendered")
        if on_batch is not None:
            on_batch(start + len(chunk), len(missing))
    return [found[k] for k in keys]
