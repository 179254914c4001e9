"""The app's state (:class:`BlocklensApp`): the icon store, the models, the job registry and every cache, made in
one place, behind the methods the routes call.

The work itself is done by :class:`~blocklens.app.explanations.Explanations` (explanations, their render jobs,
icons), :class:`~blocklens.app.datasets.Datasets` (indexes, examples, atlases, class concepts) and
:class:`~blocklens.app.dictionaries.Dictionaries` (saved concept dictionaries); this class
makes them, gives them what they share, and forwards to them.
"""
from __future__ import annotations

from ..store import IconStore
from .cache import LRU
from .datasets import Datasets
from .dictionaries import Dictionaries
from .explanations import Explanations, HeldExplanation
from .jobs import JobRegistry
from .models import ModelPool
from .settings import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, Settings


def _setting(name: str) -> property:
    return property(lambda self: getattr(self.settings, name), doc=f"``settings.{name}`` (read-only)")


class BlocklensApp:
    """The app's state: models (an analysis, a render and a concepts copy of each, each with its lock), recent
    explanations, indexes, atlases and class concepts (each an LRU), background jobs and the icon store. Its
    settings (:class:`~blocklens.app.settings.Settings`) are fixed once made. ``device``: where every model it
    loads runs (``auto``, ``cpu``, ``cuda``, ``cuda:N``; a device that is not here raises at once)."""

    preset = _setting("preset")
    icon_recipe = _setting("icon_recipe")
    grid_recipe = _setting("grid_recipe")
    render = _setting("render")
    max_upload_bytes = _setting("max_upload_bytes")
    max_upload_pixels = _setting("max_upload_pixels")
    max_explanations = _setting("max_explanations")
    max_concepts = _setting("max_concepts")

    def __init__(self, store: IconStore | str | None = None, preset: str | None = None, *, max_explanations: int = 16,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_upload_pixels: int = MAX_UPLOAD_PIXELS,
                 render: bool = True, icon_recipe: dict | None = None, grid_recipe: dict | None = None,
                 models: list | None = None, device: str | None = "cpu"):
        self.settings = s = Settings(preset, dict(icon_recipe or {}), dict(grid_recipe or {}), render,
                                     max_upload_bytes, max_upload_pixels, max_explanations=max_explanations)
        self.store = store if isinstance(store, IconStore) else IconStore(store)
        self.pool = ModelPool(models, device=device)
        self.specs = self.pool.specs  # the user's models (serve --model SPEC [--weights FILE]), by spec
        self._models = self.pool.loaded  # (name, role) -> model; a test may put one in by hand
        self.jobs = JobRegistry(s.max_jobs)
        self.caches = {"explanations": LRU(s.max_explanations), "indexes": LRU(s.max_indexes),
                       "atlases": LRU(s.max_atlases), "concepts": LRU(s.max_concepts),
                       "dictionaries": LRU(s.max_dictionaries)}
        self.explanations = Explanations(self.store, self.pool, self.jobs, s, self.caches["explanations"])
        self.datasets = Datasets(self.store, self.pool, self.jobs, s, indexes=self.caches["indexes"],
                                 atlases=self.caches["atlases"], concepts=self.caches["concepts"])
        self.dictionaries = Dictionaries(self.store, self.pool, held=self.caches["dictionaries"])

    # -- models
    def model(self, name: str, role: str = "analysis"):
        """The ``role`` copy of model ``name`` (a zoo model or a served spec) and its lock."""
        return self.pool.get(name, role)

    def models(self) -> list[dict]:
        return self.pool.listing()

    def model_info(self, name: str) -> dict:
        return self.pool.info(name)

    # -- explanations, their render jobs and pictures
    def image_from(self, name: str | None, data: bytes | None):
        return self.explanations.image_from(name, data)

    def explain(self, image, model: str, layers: list[str] | None,
                classes: list[str] | None) -> tuple[str, HeldExplanation]:
        return self.explanations.explain(image, model, layers, classes)

    def entry(self, ident: str) -> HeldExplanation:
        return self.explanations.entry(ident)

    def document(self, ident: str, held: HeldExplanation) -> dict:
        return self.explanations.document(ident, held)

    def job(self, ident: str):
        """Job ``ident`` (a render or a concepts job); 404 when there is none."""
        return self.jobs.get(ident)

    def icon_png(self, key: str) -> bytes:
        return self.explanations.icon_png(key)

    def sprite_png(self, fingerprint: str, layer: str, name: str) -> bytes:
        return self.explanations.sprite_png(fingerprint, layer, name)

    # -- over indexes: examples, atlases, class concepts
    def indexes(self) -> list[dict]:
        return self.datasets.indexes()

    def examples(self, key: str, layer: str, unit: int, k: int = 6) -> dict:
        return self.datasets.examples(key, layer, unit, k)

    def atlas(self, key: str, layer: str, grid: int | None = None) -> dict:
        return self.datasets.atlas(key, layer, grid)

    def index_classes(self, key: str) -> dict:
        return self.datasets.index_classes(key)

    def start_concepts(self, key: str, cls: str, vs: str | None = None, layer: str | None = None,
                       k: int | None = None) -> dict:
        return self.datasets.start_concepts(key, cls, vs, layer, k)

    def concepts_document(self, ident: str) -> dict:
        return self.datasets.concepts_document(ident)

    # -- saved concept dictionaries
    def dictionary_list(self) -> list[dict]:
        return self.dictionaries.listing()

    def dictionary_document(self, key: str) -> dict:
        return self.dictionaries.document(key)

    def close(self) -> None:
        """Stop the job runners (queued jobs are dropped; a running one finishes in its thread)."""
        self.explanations.close()
        self.datasets.close()
