"""Explanations in the app (:class:`Explanations`): the image a request names or uploads, the explanations held
(LRU), their page documents and reports, the render jobs that fill in the pictures they lack, and icons and
sprite sheets by store key.

An explanation's numbers come at once (``explain(..., icons="cached", grids="cached")``, seconds); what the store
lacks is rendered by a :class:`~blocklens.app.jobs.RenderJob`, one at a time, with
:func:`blocklens.explain.finish` on the render copy of the model. It renders a copy of the explanation, so that the
page keeps reading the one held meanwhile, and swaps it in when done; icons are announced as their batches land.
"""
from __future__ import annotations

import copy
import hashlib
import io
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..analyses.common import class_indices, prepare, spatial_layer
from ..explain import explain, finish
from ..images import ImageError, bundled_images, load_image
from ..recipes import default_layers
from ..store import IconStore
from ..web.data import layer_sprites, page_data
from ..web.report import report_html, title_for
from .cache import LRU
from .checks import HEX16, ID, KEY, NAME, HTTPError, check_address
from .jobs import JobRegistry, RenderJob, run_job
from .models import ModelPool
from .settings import Settings

MAX_LAYERS = 4  # layers one explanation may ask for


@dataclass
class HeldExplanation:
    """An explanation the app holds, with the prepared image (its grids are rendered from it), its model's name,
    and the lock its readers take (a render job swaps the finished explanation in under it)."""

    explanation: object
    prep: object
    model: str
    lock: threading.Lock = field(default_factory=threading.Lock)


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def bundled_photo(name: str) -> Path:
    """The bundled photograph ``name``; 404 naming the others when there is none."""
    photos = bundled_images()
    if name not in photos:
        raise HTTPError(404, f"no bundled photo {name!r}; choose one of {', '.join(photos)}")
    return photos[name]


def photo_thumbnail(name: str) -> bytes:
    """The bundled photograph ``name`` as a JPEG of at most 160 px a side (the page's photo picker)."""
    img = load_image(bundled_photo(name))
    img.thumbnail((160, 160))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class Explanations:
    """The explanations of one app: ``held`` is their LRU, ``jobs`` the app's job registry (subjects
    ``("render", explanation id)``)."""

    def __init__(self, store: IconStore, models: ModelPool, jobs: JobRegistry, settings: Settings, held: LRU):
        self.store, self.models, self.jobs, self.settings, self.held = store, models, jobs, settings, held
        self._building: dict[str, threading.Lock] = {}  # explanation id -> the lock of its one computation
        self._lock = threading.Lock()
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blocklens-render")

    def image_from(self, name: str | None, data: bytes | None):
        """The uploaded bytes (checked by content, capped in bytes and pixels) or else the bundled photo ``name``."""
        s = self.settings
        if data:
            try:
                return load_image(data, max_pixels=s.max_upload_pixels, max_bytes=s.max_upload_bytes)
            except ImageError as e:
                status = 413 if "pixels" in str(e) or "MB" in str(e) else 400
                raise HTTPError(status, f"upload: {e}") from None
        if not name:
            raise HTTPError(400, "no image: post the image's bytes, or name a bundled photo with ?image= "
                                 f"({', '.join(bundled_images())})")
        return load_image(bundled_photo(name))

    def explain(self, image, model: str, layers: list[str] | None,
                classes: list[str] | None) -> tuple[str, HeldExplanation]:
        """The numbers of ``image`` at ``layers`` (held, or computed once however many ask at once), and a render
        job for the pictures the store lacks when the app renders (also restarting one that failed before)."""
        if layers and len(layers) > MAX_LAYERS:
            raise HTTPError(400, f"at most {MAX_LAYERS} layers at once, got {len(layers)}")
        m, lock = self.models.get(model)
        layers = sorted({spatial_layer(m, l, "explain").name for l in (layers or default_layers(m))},
                        key=lambda n: m.layer(n).order)
        classes = class_indices(m, classes) if classes else None
        with lock:
            prep = prepare(m, image)
        s = self.settings
        preset = s.preset_for(m)
        digest = hashlib.sha256(prep.x.numpy().tobytes()).hexdigest()
        recipe = (preset, sorted(s.icon_recipe.items()), sorted(s.grid_recipe.items()))
        ident = hashlib.sha256(repr((m.name, digest, layers, classes, recipe)).encode()).hexdigest()[:20]
        held = self._cached_or_build(ident, lambda: HeldExplanation(
            explain(prep, model=m, layers=layers, classes=classes, preset=preset, icon_recipe=s.icon_recipe,
                    grid_recipe=s.grid_recipe, icons="cached", grids="cached", store=self.store,
                    progress=False), prep, m.name), lock)
        if s.render and held.explanation.missing:
            self.start_render(ident, held)
        return ident, held

    def _cached_or_build(self, ident: str, build, model_lock) -> HeldExplanation:
        held = self.held.get(ident)
        if held is not None:
            return held
        with self._lock:
            building = self._building.setdefault(ident, threading.Lock())
        try:
            with building:  # one computation per explanation, however many ask at once
                held = self.held.get(ident)
                if held is None:
                    with model_lock:
                        held = build()
                    self.held.put(ident, held)
                return held
        finally:
            with self._lock:
                self._building.pop(ident, None)

    def entry(self, ident: str) -> HeldExplanation:
        """Explanation ``ident``; 404 when it is not held (any more)."""
        check_address(ID, ident, "no such explanation")
        held = self.held.get(ident)
        if held is None:
            raise HTTPError(404, f"explanation {ident} is not held any more (the server keeps the "
                                 f"{self.held.maxsize} most recent); explain the image again")
        return held

    def document(self, ident: str, held: HeldExplanation) -> dict:
        """The page document of ``held``: pictures by URL (icons, sprite sheets, the photo), and its render job
        while one is queued or running."""
        with held.lock:
            expl = held.explanation
            sprites = layer_sprites(expl, self.store,
                                    lambda layer, rh, index: f"api/sprites/{expl.fingerprint}/{layer}/{rh}.png")
            doc = page_data(expl, lambda k, icon: f"api/icons/{k}.png" if icon is not None else None,
                            f"api/explanations/{ident}/image.png",
                            lambda k, grid: f"api/icons/{k}.png" if grid is not None else None, sprites)
        doc["id"] = ident
        job = self.jobs.active(("render", ident))
        doc["job"] = job.id if job is not None else None
        return doc

    def report(self, ident: str) -> tuple[str, str]:
        """The self-contained report of explanation ``ident`` and a file name for it."""
        held = self.entry(ident)
        with held.lock:
            text = report_html(held.explanation, store=self.store)
            title = title_for(held.explanation)
        return text, re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] + ".html"

    def photo_png(self, ident: str) -> bytes:
        """The square crop the model saw, as PNG."""
        return png_bytes(self.entry(ident).explanation.crop)

    def start_render(self, ident: str, held: HeldExplanation) -> RenderJob:
        """The explanation's queued or running render job, or a new one."""
        def make(job_id: str) -> RenderJob:
            expl = held.explanation
            grid_keys = {l.grid_key for l in expl.layers}
            return RenderJob(job_id, ident, [k for k in expl.missing if k not in grid_keys],
                             [l.layer for l in expl.layers if l.grid is None])

        job, new = self.jobs.start(("render", ident), make)
        if new:
            self._renderer.submit(run_job, job, lambda: self._render(job, held))
        return job

    def _render(self, job: RenderJob, held: HeldExplanation) -> None:
        m, lock = self.models.get(held.model, "render")
        with held.lock:
            work = copy.deepcopy(held.explanation)  # rendered apart: the page reads the held one meanwhile

        def on_progress(stage: str, done: int, total: int) -> None:
            job.on_progress(stage, done, total)
            if stage == "icons":  # after each batch: announce the icons now in the store
                job.landed([k for k in job.waiting() if self.store.exists(k)])

        with lock:
            finish(m, work, self.store, progress=False, prep=held.prep, on_progress=on_progress)
        with held.lock:
            held.explanation = work

    def icon_png(self, key: str) -> bytes:
        check_address(KEY, key, "icons are addressed by their 64-hex store key")
        icon = self.store.get(key)
        if icon is None:
            raise HTTPError(404, f"icon {key[:12]}… is not in the store (yet)")
        return png_bytes(icon.to_pil())

    def sprite_png(self, fingerprint: str, layer: str, name: str) -> bytes:
        rh = name[:-4] if name.endswith(".png") else name
        if not (NAME.match(fingerprint) and NAME.match(layer) and HEX16.match(rh)):
            raise HTTPError(404, "sprite sheets are addressed as /api/sprites/<fingerprint>/<layer>/<recipe hash>.png")
        got = self.store.sprite_bytes(fingerprint, layer, rh)
        if got is None:
            raise HTTPError(404, f"the store has no sprite sheet of {layer!r} for recipe {rh}")
        return got[0]

    def close(self) -> None:
        self._renderer.shutdown(wait=False, cancel_futures=True)
