"""Precompute: render every icon of a model's layers into a store, resumably, on local processes or a Ray cluster.

    from blocklens.precompute import precompute
    summary = precompute("efficientnet_lite0", ["blocks.7", "blocks.11"], store="s3://bucket/icons", workers=4)

The plan is every channel of each layer (or the units asked for, neurons included) and, on request, class
logits, each keyed exactly as :func:`blocklens.icons` keys it, so the report and the web app find them. Units
the store already lists are skipped, so a run that was killed (at any moment: every write is atomic) resumes
where it stopped. The rest is split into batches of one layer each and rendered by workers: local processes
(spawned; ``workers=0`` renders in this process) or Ray tasks (``ray="auto"``, an address, or ``"local"``).
Workers write each icon to the store as soon as its batch is done, so a crash loses at most the batches in
flight. Just before rendering, a worker drops the units that another run has stored meanwhile: two runs on
one store split most of the work, and a unit both render is written twice, harmlessly (puts are atomic).

When every planned unit of a layer is done, the layer's sprite sheet (one PNG grid of every icon of the layer
the store holds, in channel order) and its JSON index are (re)written to the store, for the web app and the
report (:meth:`IconStore.sprite`). Class icons form one sheet under the layer name ``"logit"``.
"""
from __future__ import annotations

import math
import os
import re
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .errors import BlocklensError
from .iconcache import icon_key_for, render_batch
from .jobs import Backend, Progress, Shard, describe_error, driver_model, parent_alive, run_shards
from .recipes import default_layers, default_preset, icon_recipe
from .store import Icon, IconStore, recipe_hash

__all__ = ["PlannedUnit", "RenderBatch", "render_units", "parse_units", "parse_shard", "plan", "precompute", "write_sprite", "layer_icons",
           "export_layer", "LOGIT_GROUP"]

#: Sprite group (the "layer" of the sheet) of class logit icons.
LOGIT_GROUP = "logit"


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedUnit:
    """One icon to have in the store."""

    key: str
    spec: str               # the target, as parse_target() reads it: "blocks.3:5", "blocks.3:5@7,7", "logit:282"
    layer: str              # canonical layer name ("<output>" for logits)
    group: str | None       # sprite sheet it belongs to: the layer (channels), "logit" (classes), None (neurons)
    index: int              # channel or class index


_TOKEN = re.compile(r"\s*(?:(?P<all>all)|(?P<c>\d+)\s*@\s*(?P<x>\d+)\s*,\s*(?P<y>\d+)|(?P<a>\d+)(?:\s*-\s*(?P<b>\d+))?)"
                    r"\s*(?:,|$)")


def parse_units(spec: str | Iterable[str] | None, n: int, what: str = "channel",
                neurons: bool = True) -> list[int | tuple[int, int, int]]:
    """Units from a spec: ``"all"``, ``"0-15"``, ``"3,5,8-11"``, ``"12@7,7"`` (channel 12 at x=7, y=7, a
    neuron), or a list of such strings; ``n`` is how many there are (channels, classes). Returns ints and
    ``(channel, x, y)`` tuples in the order given, without repeats. ``None`` means all."""
    if spec is None:
        return list(range(n))
    text = spec if isinstance(spec, str) else ",".join(str(s) for s in spec)
    text = text.strip()
    if not text:
        raise BlocklensError(f"empty {what} spec; use all, 0-15, 3,5,8-11" + (", 12@7,7" if neurons else ""))
    out: list = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            example = "all, 0-15, 3,5,8-11" + (" or 12@7,7 (a neuron)" if neurons else "")
            raise BlocklensError(f"cannot read {what} spec {text!r} at {text[pos:]!r}: use {example}")
        pos = m.end()
        if m.group("all"):
            out.extend(range(n))
            continue
        if m.group("c") is not None:
            if not neurons:
                raise BlocklensError(f"{what} spec {text!r}: {m.group(0).strip(' ,')!r} is a neuron, not allowed here")
            c = int(m.group("c"))
            if c >= n:
                raise BlocklensError(f"{what} {c} is out of range: there are {n} ({what}s 0..{n - 1})")
            out.append((c, int(m.group("x")), int(m.group("y"))))
            continue
        a = int(m.group("a"))
        b = int(m.group("b")) if m.group("b") is not None else a
        if b < a:
            raise BlocklensError(f"{what} range {a}-{b} is empty (write the smaller index first)")
        if b >= n:
            raise BlocklensError(f"{what} {b} is out of range: there are {n} ({what}s 0..{n - 1})")
        out.extend(range(a, b + 1))
    return list(dict.fromkeys(out))


def plan(model, layers: Sequence[str] | None = None, units: str | Sequence[str] | None = None,
         logits: str | Sequence[str] | None = None, recipe: dict | None = None) -> list[PlannedUnit]:
    """Every unit to precompute, in order (layers as given, then classes), without repeats.

    ``layers``: layer names (default: :func:`~blocklens.recipes.default_layers`, the report's, unless only ``logits`` are asked
    for); ``units``: which units of each layer (:func:`parse_units`; default all channels); ``logits``: class
    indices (``"all"``, ``"0-9"``...), default none. ``recipe``: the full recipe (:func:`recipe_for`; default: the
    device's preset, as :func:`blocklens.icons`).
    """
    from .optvis.targets import channel_target, logit_target, neuron_target

    if recipe is None:
        recipe = icon_recipe(model=model)
    if layers is None:
        layers = [] if logits is not None else default_layers(model)
    out: dict[str, PlannedUnit] = {}
    for name in layers:
        info = model.layer(name)
        for u in parse_units(units, info.channels, "channel"):
            if isinstance(u, tuple):
                t = neuron_target(model, info.name, *u)
                group = None
            else:
                t = channel_target(model, info.name, u)
                group = info.name
            key = icon_key_for(model, t, recipe)
            out.setdefault(key, PlannedUnit(key, t.spec, t.layer, group, t.index))
    if logits is not None:
        for c in parse_units(logits, len(model.labels), "class", neurons=False):
            t = logit_target(model, c)
            key = icon_key_for(model, t, recipe)
            out.setdefault(key, PlannedUnit(key, t.spec, t.layer, LOGIT_GROUP, t.index))
    return list(out.values())


def parse_shard(shard: str | tuple[int, int]) -> tuple[int, int]:
    """``"I/N"`` or ``(I, N)`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        part, parts = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        raise BlocklensError(f"shard must be I/N (e.g. 0/4), got {shard!r}") from None
    if parts < 1 or not 0 <= part < parts:
        raise BlocklensError(f"shard {part}/{parts}: need 0 <= I < N")
    return part, parts


def _batches(units: Sequence[PlannedUnit], batch: int) -> list[list[PlannedUnit]]:
    """Consecutive units of one layer, at most ``batch`` at a time (a batch never spans two layers: the
    forward pass stops after the deepest layer in it)."""
    out: list[list[PlannedUnit]] = []
    for u in units:
        if out and out[-1][0].layer == u.layer and len(out[-1]) < batch:
            out[-1].append(u)
        else:
            out.append([u])
    return out


# -------------------------------------------------------------------------------------------- the task


@dataclass
class RenderBatch:
    """A batch of units of one layer to render (a shard's payload; picklable): ``recheck`` skips the units that
    appeared in the store since planning; ``run`` is the id the icons carry in their metadata."""

    units: list[PlannedUnit]
    recipe: dict
    run: str = ""
    recheck: bool = True


def render_units(model, batch: RenderBatch, store: IconStore | None) -> dict:
    """Precompute's task (see :func:`blocklens.jobs.run_shards`): render the batch (minus what the store got
    meanwhile) and put its icons into ``store``, or return them (``entries``) when the worker does not write."""
    from .optvis.targets import parse_target

    todo, skipped = list(batch.units), []
    if batch.recheck and store is not None:
        todo, skipped = [], []
        for u in batch.units:
            (skipped if store.exists(u.key) else todo).append(u)
    entries = []
    if todo:
        targets = [parse_target(model, u.spec) for u in todo]
        for u, t in zip(todo, targets):
            if icon_key_for(model, t, batch.recipe) != u.key:
                raise BlocklensError(f"unit {u.spec} keys differently in the worker than in the plan: "
                                     "different blocklens versions?")
        rendered = render_batch(model, targets, batch.recipe, progress=False, desc=f"batch of {todo[0].spec}")
        if not parent_alive():  # the run was killed: write nothing behind its back
            os._exit(1)
        for u, (pixels, meta) in zip(todo, rendered):
            meta["run"] = batch.run
            if store is not None:
                store.put(u.key, pixels, meta)
            else:
                entries.append((u.key, pixels, meta))
    return {"rendered": [u.key for u in todo], "skipped": [u.key for u in skipped], "entries": entries}


# -------------------------------------------------------------------------------------------- sprites


def group_units(model, group: str, recipe: dict) -> list[tuple[int, Any, str]]:
    """``(index, target, key)`` of every unit a sprite group has: each channel of a layer, or each class."""
    from .optvis.targets import channel_target, logit_target

    if group == LOGIT_GROUP:
        targets = [logit_target(model, c) for c in range(len(model.labels))]
    else:
        info = model.layer(group)
        targets = [channel_target(model, info.name, c) for c in range(info.channels)]
    return [(t.index, t, icon_key_for(model, t, recipe)) for t in targets]


def _canonical_group(model, group: str) -> str:
    if group.lower() in ("logit", "logits", "class", "classes"):
        return LOGIT_GROUP
    return model.layer(group).name


def layer_icons(store: IconStore, model, layer: str, recipe: dict,
                present: set[str] | None = None) -> tuple[list[Icon], dict]:
    """The icons a store holds for every unit of ``layer`` (``"logit"``: classes), in order, and their index:
    ``model``, ``fingerprint``, ``layer``, ``unit_kind``, ``recipe``, ``recipe_hash``, ``icon_size`` [H, W],
    ``count``, ``total``, ``complete``, ``missing`` (indices) and ``units`` (per icon: ``index``, ``unit``,
    ``label``, ``key``, ``objective``, ``dead``). ``present``: keys known to exist (skips reads of the others)."""
    group = _canonical_group(model, layer)
    entries = group_units(model, group, recipe)
    icons, units, missing = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a corrupt entry is moved aside and counted as missing
        for index, t, key in entries:
            icon = store.get(key) if present is None or key in present else None
            if icon is None:
                missing.append(index)
                continue
            icons.append(icon)
            units.append({"index": index, "unit": t.unit, "label": t.label, "key": key,
                          "objective": icon.meta.get("objective"), "dead": bool(icon.meta.get("dead", False))})
    shape = list(icons[0].image.shape[:2]) if icons else None
    index = {"model": model.name, "fingerprint": model.fingerprint, "layer": group,
             "unit_kind": "logit" if group == LOGIT_GROUP else "channel", "recipe": recipe,
             "recipe_hash": recipe_hash(recipe), "icon_size": shape, "count": len(icons), "total": len(entries),
             "complete": not missing, "missing": missing, "units": units}
    return icons, index


def _sheet(icons: list[Icon], columns: int) -> np.ndarray:
    h, w = icons[0].image.shape[:2]
    c = 4 if any(i.image.shape[2] == 4 for i in icons) else 3
    rows = math.ceil(len(icons) / columns)
    sheet = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    if c == 4:
        sheet[..., 3] = 0
    for n, icon in enumerate(icons):
        img = icon.image
        if img.shape[:2] != (h, w):
            from PIL import Image

            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        if img.shape[2] != c:
            img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
        r, col = divmod(n, columns)
        sheet[r * h:(r + 1) * h, col * w:(col + 1) * w] = img
    return sheet


def write_sprite(store: IconStore, model, layer: str, recipe: dict, present: set[str] | None = None,
                 force: bool = False) -> str | None:
    """Write the sprite sheet of ``layer`` (or ``"logit"``) for ``recipe``: every icon of it the store holds,
    in order, ``columns = ceil(sqrt(count))`` to a row; the index (see :func:`layer_icons`) adds ``columns``,
    ``rows`` and per unit ``row``, ``col``, ``x``, ``y`` (top-left pixel in the sheet). Returns the index's
    URL, or None when the store holds no icon of the layer. Skipped (returning the URL) when the stored sheet
    already shows exactly these icons, unless ``force``."""
    group = _canonical_group(model, layer)
    if present is not None and not force:
        keys = [k for _, _, k in group_units(model, group, recipe) if k in present]
        old = store.sprite_index(model.fingerprint, group, recipe)
        if keys and old and [u.get("key") for u in old.get("units", [])] == keys:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if store.sprite_bytes(model.fingerprint, group, recipe) is not None:
                    return store.sprite_url(model.fingerprint, group, recipe)
    icons, index = layer_icons(store, model, group, recipe, present)
    if not icons:
        return None
    columns = max(1, math.ceil(math.sqrt(len(icons))))
    h, w = index["icon_size"]
    for n, u in enumerate(index["units"]):
        r, c = divmod(n, columns)
        u.update(row=r, col=c, x=c * w, y=r * h)
    index.update(columns=columns, rows=math.ceil(len(icons) / columns))
    return store.put_sprite(model.fingerprint, group, recipe, _sheet(icons, columns), index)


def export_layer(store: IconStore, model, layer: str, recipe: dict, out: str | os.PathLike) -> dict:
    """Write every icon the store holds for ``layer`` (``"logit"``: classes) to ``out/`` as PNGs
    (``channel-0005.png``, ``logit-0282.png``) plus ``out/index.json`` (:func:`layer_icons`'s index, with
    ``file`` per unit). Returns the index."""
    import json

    out = Path(out)
    icons, index = layer_icons(store, model, layer, recipe, set(store.keys()))
    out.mkdir(parents=True, exist_ok=True)
    for icon, u in zip(icons, index["units"]):
        name = f"{index['unit_kind']}-{u['index']:04d}.png"
        icon.to_pil().save(out / name)
        u["file"] = name
    (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    return index


# ---------------------------------------------------------------------------------------------- run


def _recipe_on(device: str | None, overrides: dict) -> dict:
    """The recipe of :func:`blocklens.icons` on the device the icons render on: quick on a CPU, default on a GPU."""
    on = "quick" if device == "cpu" else "default" if device and str(device).startswith("cuda") else default_preset()
    return icon_recipe(on, **overrides)


def _planned(model, store: IconStore, planned: list[PlannedUnit], shard, verify: bool):
    """``(planned, present keys, to render, corrupt keys)``: the plan (its ``shard`` only) against the store."""
    if not planned:
        raise BlocklensError("nothing to precompute: no layer or class was selected")
    if shard is not None:
        part, parts = parse_shard(shard)
        planned = [u for u in planned if int(u.key[:12], 16) % parts == part]
    listed = set(store.keys())
    corrupt = _verify(store, planned, listed) if verify else []
    present = {u.key for u in planned if u.key in listed}
    return planned, present, [u for u in planned if u.key not in present], corrupt


def _verify(store: IconStore, planned: list[PlannedUnit], listed: set[str]) -> list[str]:
    """Keys of planned entries that the listing has but that do not read back (moved aside by the store)."""
    corrupt = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for u in planned:
            if u.key in listed and store.get(u.key) is None:
                corrupt.append(u.key)
                listed.discard(u.key)
    return corrupt


class _Tally:
    """The driver's side of a precompute run: counts per layer, sprites of finished layers, the summary."""

    def __init__(self, store, model, recipe, planned, present, todo, summary, sprites: bool, say):
        self.store, self.model, self.recipe, self.say = store, model, recipe, say
        self.present, self.summary, self.sprites = present, summary, sprites
        self.layers = {name: {"planned": 0, "present": 0, "rendered": 0, "skipped": 0, "failed": 0, "sprite": None}
                       for name in dict.fromkeys(u.group or u.layer for u in planned)}
        for u in planned:
            row = self.layers[u.group or u.layer]
            row["planned"] += 1
            row["present"] += u.key in present
        groups = list(dict.fromkeys(u.group for u in planned if u.group is not None))
        self.remaining = {g: 0 for g in groups}
        for u in todo:
            if u.group is not None:
                self.remaining[u.group] += 1
        summary["layers"] = self.layers

    def complete_groups(self) -> None:
        for g, n in self.remaining.items():
            if n == 0:
                self.sprite(g)

    def sprite(self, group: str) -> None:
        if not self.sprites:
            return
        try:
            url = write_sprite(self.store, self.model, group, self.recipe, self.present)
        except Exception as e:  # a sheet is a convenience: report it, keep the run going
            self.summary["errors"].append({"sprite": group, "error": describe_error(e)})
            self.say(f"sprite of {group} failed: {describe_error(e)}")
            return
        self.summary["sprites"][group] = url
        if group in self.layers:
            self.layers[group]["sprite"] = url

    def _finish(self, units) -> None:
        for u in units:
            if u.group is not None:
                self.remaining[u.group] -= 1
                if self.remaining[u.group] == 0:
                    self.sprite(u.group)

    def on_result(self, shard: Shard, res: dict, check_seen: bool) -> None:
        for key, pixels, meta in res.get("entries") or ():
            self.store.put(key, pixels, meta)
        if check_seen:
            unseen = [k for k in res["rendered"] if not self.store.exists(k)]
            if unseen:  # e.g. Ray workers on other machines writing to their own disks
                raise BlocklensError(
                    f"a worker rendered {len(unseen)} icons that this process does not find in {self.store.url}: on "
                    "several machines the store must be one they all reach (an object store URL such as "
                    "s3://bucket/icons, or a network folder mounted at the same path)")
        self.present.update(set(res["rendered"]) | set(res["skipped"]))
        self.summary["rendered"] += len(res["rendered"])
        self.summary["skipped"] += len(res["skipped"])
        rendered = set(res["rendered"])
        for u in shard.payload.units:
            self.layers[u.group or u.layer]["rendered" if u.key in rendered else "skipped"] += 1
        self._finish(shard.payload.units)

    def on_error(self, shard: Shard, text: str) -> None:
        units = shard.payload.units
        self.summary["failed"] += len(units)
        for u in units:
            self.layers[u.group or u.layer]["failed"] += 1
        self.summary["errors"].append({"batch": shard.index, "layer": units[0].layer,
                                       "units": [u.spec for u in units], "error": text})
        self._finish(units)


def precompute(model: Any = "efficientnet_lite0", layers: Sequence[str] | None = None,
               units: str | Sequence[str] | None = None, logits: str | Sequence[str] | None = None, *,
               store: IconStore | str | os.PathLike | None = None, storage_options: dict | None = None,
               workers: int = 1, threads: int | None = None, device: str | None = None, ray: str | None = None,
               gpus_per_task: float = 0, ray_init: dict | None = None, batch: int = 8,
               progress: bool | None = None, sprites: bool = True, verify: bool = False, dry_run: bool = False,
               shard: str | tuple[int, int] | None = None, loader: Callable[[], Any] | None = None,
               weights: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
               on_progress: Callable[[Progress], None] | None = None, **recipe_overrides) -> dict:
    """Render every planned icon that the store lacks; return a summary dict.

    ``model``: a model spec (a zoo name, ``package.module:callable``, a ``.pt2`` file, ``timm:NAME``...; see
    :func:`blocklens.load_model`) with ``weights`` (a state dict file), or a :class:`~blocklens.Model`. Workers
    build their own copy from the spec string and weights path (never a pickled module), so a Model must come
    from :func:`blocklens.load_model` (it remembers its spec) or come with a picklable ``loader()``.
    ``layers``/``units``/``logits``: see :func:`plan`. ``store``: an :class:`IconStore`, a directory, an
    fsspec URL (``storage_options`` for its file system) or None (the default store). ``workers``: local
    worker processes (0: render in this process); ``threads``: torch threads per worker (default: CPU cores /
    workers locally, 1 per Ray task); ``device``: ``"cpu"``,
    ``"cuda"`` (local worker *i* gets GPU *i* mod count) or None/``"auto"``. ``ray``: run batches as Ray
    tasks instead: ``"auto"`` (the running cluster), an address (``ray://head:10001``), or ``"local"``
    (start one); an already initialized Ray is used as is; ``gpus_per_task`` reserves GPUs per task.
    ``batch``: units rendered together. ``progress``: a bar with rate and ETA on stderr (default: when
    stderr is a terminal); ``on_progress(Progress)``: icons done of those to render, after each batch.
    ``sprites``: write each finished layer's sprite sheet. ``verify``: fully check the
    entries already present (corrupt ones are moved aside and rendered again) instead of trusting the
    listing. ``dry_run``: plan only. ``shard``: ``"I/N"`` (or ``(I, N)``) keeps only the I-th of N disjoint
    parts of the plan (split by key), so N runs on N machines share one store without rendering anything
    twice. ``log``: called with one-line messages. Recipe options (``size``,
    ``steps``, ``seed``...) as for :func:`blocklens.icons`.

    The summary: ``planned``, ``present`` (already stored), ``to_render``, ``rendered`` (by this run),
    ``skipped`` (stored by another run meanwhile), ``failed`` (units in batches that raised; ``errors`` says
    why), ``corrupt`` (found by ``verify``), ``units_per_minute`` (rendered / ``render_seconds``, workers'
    start-up included; ``first_result_seconds`` is when the first batch came back), per layer the same
    counts and its ``sprite``, and the ``run`` id that this run's icons carry in their metadata.
    """
    t_start = time.perf_counter()
    say = log or (lambda msg: None)
    if batch < 1:
        raise BlocklensError(f"batch must be at least 1, got {batch}")
    backend = Backend(workers=workers, threads=threads, device=device, ray=ray, gpus_per_task=gpus_per_task,
                      ray_init=ray_init)
    recipe = _recipe_on(device, recipe_overrides)
    model_name = model if isinstance(model, str) else model.name
    model, spec, weights = driver_model(model, loader=loader, weights=weights, device=device, remote=backend.remote)
    store = store if isinstance(store, IconStore) else IconStore(store, storage_options=storage_options)
    planned, present, todo, corrupt = _planned(model, store, plan(model, layers, units, logits, recipe), shard, verify)
    run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"
    write = store.shared or not backend.remote
    shards = [Shard(i, len(b), RenderBatch(b, recipe, run, recheck=write)) for i, b in enumerate(_batches(todo, batch))]
    summary: dict[str, Any] = {
        "model": model_name, "fingerprint": model.fingerprint, "store": store.url, "recipe": recipe,
        "recipe_hash": recipe_hash(recipe), "backend": backend.kind, "workers": workers if ray is None else None,
        "ray": ray, "threads": backend.threads, "batch": batch,
        "shard": None if shard is None else "%d/%d" % parse_shard(shard), "run": run, "planned": len(planned),
        "present": len(present), "to_render": len(todo), "batches": len(shards), "rendered": 0, "skipped": 0,
        "failed": 0, "corrupt": len(corrupt), "errors": [], "sprites": {},
    }
    tally = _Tally(store, model, recipe, planned, present, todo, summary, sprites, say)
    _announce(say, backend, store, planned, tally, present, todo, shards, model_name)
    if dry_run:
        summary.update(seconds=round(time.perf_counter() - t_start, 3), render_seconds=0.0, first_result_seconds=None,
                       units_per_minute=None)
        return summary
    tally.complete_groups()
    check_seen = backend.remote and write
    report = run_shards(shards, render_units, worker=backend.worker_ref(model, spec, weights, loader),
                        backend=backend, store=store, model=model, phase="render", desc=f"precompute {model_name}",
                        unit="icon", progress=progress, on_progress=on_progress,
                        on_result=lambda s, res: tally.on_result(s, res, check_seen), on_error=tally.on_error,
                        log=say, label=lambda s: f"batch {s.index} ({s.payload.units[0].spec}..)")
    return _close(summary, report, t_start, say)


def _announce(say, backend: Backend, store: IconStore, planned, tally: _Tally, present, todo, shards, name) -> None:
    if backend.kind == "ray" and store.is_local and backend.ray not in ("local",):
        say(f"note: the store is the folder {store.url}; Ray workers on other machines write to their own disks "
            "unless it is a network folder mounted at the same path everywhere (else use an object store URL)")
    say(f"{len(planned)} icons planned in {len(tally.layers)} layer(s) of {name}, {len(present)} already in "
        f"{store.url}; {len(todo)} to render in {len(shards)} batches on {backend.describe()}")


def _close(summary: dict, report, t_start: float, say) -> dict:
    """The summary's timings and the closing line."""
    render_seconds = report.seconds
    summary["render_seconds"] = round(render_seconds, 3)
    first = report.first_result_seconds
    summary["first_result_seconds"] = round(first, 3) if first is not None else None
    summary["seconds"] = round(time.perf_counter() - t_start, 3)
    summary["units_per_minute"] = (round(60.0 * summary["rendered"] / render_seconds, 2)
                                   if summary["rendered"] and render_seconds > 0 else None)
    say(f"rendered {summary['rendered']} icons in {render_seconds:.1f} s"
        + (f" ({summary['units_per_minute']:.1f}/min)" if summary["units_per_minute"] else "")
        + (f", {summary['skipped']} stored meanwhile by another run" if summary["skipped"] else "")
        + (f", {summary['failed']} FAILED (run again to retry them)" if summary["failed"] else ""))
    return summary
