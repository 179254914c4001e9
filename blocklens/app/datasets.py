"""Over the activation indexes in the store (``blocklens index``), in the app (:class:`Datasets`): their listing,
dataset examples, activation atlases (LRU), and a class's concepts, computed by a background
:class:`~blocklens.app.jobs.ConceptsJob` on the concepts copy of the model (so that neither explanations nor their
renders wait for it), its progress from :func:`~blocklens.dataset.concepts.class_concepts`' ``on_progress``, and
held (LRU).
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

from ..analyses.common import spatial_layer
from ..dataset.atlas import activation_atlas
from ..dataset.concepts import check_run, class_concepts, folder_labels
from ..dataset.examples import dataset_examples
from ..dataset.index import list_indexes, load_index
from ..store import IconStore
from .cache import LRU
from .checks import HEX16, ID, HTTPError, check_address
from .jobs import ConceptsJob, JobRegistry, run_job
from .models import ModelPool
from .settings import Settings


class Datasets:
    """Indexes, examples, atlases and class concepts of one app. ``indexes``, ``atlases`` and ``concepts`` are
    its LRUs (of loaded indexes, atlas documents and finished concepts documents); ``jobs`` the app's job
    registry (subjects ``("concepts", concepts id)``)."""

    def __init__(self, store: IconStore, models: ModelPool, jobs: JobRegistry, settings: Settings, *,
                 indexes: LRU, atlases: LRU, concepts: LRU):
        self.store, self.models, self.jobs, self.settings = store, models, jobs, settings
        self.held_indexes, self.held_atlases, self.held_concepts = indexes, atlases, concepts
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blocklens-concepts")

    def indexes(self) -> list[dict]:
        """The finished activation indexes in the store (newest first)."""
        return [i.to_json() for i in list_indexes(self.store)]

    def index(self, key: str, role: str = "analysis"):
        """Index ``key`` (loaded once, then held), the ``role`` copy of its model (checked to be the one it was
        built with) and the model's lock."""
        check_address(HEX16, key, "indexes are addressed by their 16-hex key (see /api/indexes)")
        idx = self.held_indexes.get(key)
        if idx is None:
            idx = load_index(key, store=self.store)
            self.held_indexes.put(key, idx)
        model, lock = self.models.get(idx.manifest["model"], role)
        idx.check_model(model)
        return idx, model, lock

    def examples(self, key: str, layer: str, unit: int, k: int = 6) -> dict:
        """A unit's dataset examples from index ``key``, patches inline (JPEG data URIs)."""
        idx, model, lock = self.index(key)
        with lock:
            return dataset_examples(model, layer, unit, idx, k=max(1, min(int(k), 16))).to_json(56)

    def atlas(self, key: str, layer: str, grid: int | None = None) -> dict:
        """The activation atlas of ``layer`` over index ``key`` (icons at the app's preset, through the store;
        the first request renders the missing ones and takes a while), as JSON with pictures inline."""
        idx, model, lock = self.index(key)
        if grid is None:  # about 3 samples a cell on average, 4..20 a side
            n = idx.manifest["layer_info"].get(model.layer(layer).name, {}).get("samples", 0)
            grid = max(4, min(20, round((n / 3) ** 0.5)))
        if not 2 <= int(grid) <= 40:
            raise HTTPError(400, f"grid must be 2..40, got {grid}")
        ck = (key, model.layer(layer).name, int(grid))
        doc = self.held_atlases.get(ck)
        if doc is None:
            recipe = {k: v for k, v in self.settings.icon_options(model).items() if k in ("size", "steps")}
            with lock:
                atlas = activation_atlas(model, layer, idx, grid=int(grid), store=self.store, progress=False,
                                         icons=self.settings.render, **recipe)
            doc = atlas.to_json(images=True)
            self.held_atlases.put(ck, doc)
        return doc

    def index_classes(self, key: str) -> dict:
        """What the concepts page offers for index ``key``: its model's class names (the folder's classes first,
        with their image counts, when its subfolders are class names) and the index's layers."""
        idx, model, _ = self.index(key, "concepts")
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
        the app's icon recipe, in a background job. What ``class_concepts`` checks before any work is checked
        here first (:func:`~blocklens.dataset.concepts.check_run`), so that it answers 400 and starts nothing.
        Returns ``{"id", "job", "state"}``; the result is :meth:`concepts_document` once the job is done."""
        idx, model, lock = self.index(key, "concepts")
        if not cls or not str(cls).strip():
            raise HTTPError(400, "name a class (?class=)")
        c_idx = model.class_index(str(cls).strip())  # an unknown name answers 400 with the closest names
        v_idx = model.class_index(str(vs).strip()) if vs and str(vs).strip() else None
        info = spatial_layer(model, layer or idx.layers[-1], "class concepts")
        check_run(model, info, idx.folder, list(idx.images), c_idx, v_idx, k)
        recipe = self.settings.icon_options(model)
        ident = hashlib.sha256(repr((model.name, model.fingerprint, idx.key, c_idx, v_idx, info.name, k,
                                     sorted(recipe.items()), self.settings.render)).encode()).hexdigest()[:20]
        if self.held_concepts.get(ident) is not None:
            return {"id": ident, "job": None, "state": "done"}
        job, new = self.jobs.start(("concepts", ident),
                                   lambda job_id: ConceptsJob(job_id, ident, model.labels[c_idx]))
        if new:
            run = dict(model=model, folder_or_index=idx.key, cls=c_idx, layer=info.name, k=k, vs=v_idx, **recipe)
            self._runner.submit(run_job, job, lambda: self._concepts(job, lock, run))
        return {"id": ident, "job": job.id, "state": job.state}

    def _concepts(self, job: ConceptsJob, lock, run: dict) -> None:
        job.stage = "starting"
        with lock:
            result = class_concepts(store=self.store, icons=self.settings.render, progress=False, log=job.say,
                                    on_progress=job.on_progress, **run)
            doc = result.to_json(images=True)
        doc["id"], doc["timings"] = job.concepts, result.timings
        self.held_concepts.put(job.concepts, doc)
        job.message = ""

    def concepts_document(self, ident: str) -> dict:
        """The page document of finished class concepts (``ClassConcepts.to_json()``, pictures inline); 409 while
        they are being computed, 400 with the reason when their job failed."""
        check_address(ID, ident, "no such class concepts")
        doc = self.held_concepts.get(ident)
        if doc is not None:
            return doc
        job = self.jobs.latest(("concepts", ident))
        if job is not None and job.state in ("queued", "running"):
            raise HTTPError(409, f"these concepts are still being computed (job {job.id}: {job.stage})")
        if job is not None and job.state == "error":
            raise HTTPError(400, job.error or "the concepts job failed")
        raise HTTPError(404, f"class concepts {ident} are not held any more (the server keeps the "
                             f"{self.held_concepts.maxsize} most recent); ask for them again")

    def close(self) -> None:
        self._runner.shutdown(wait=False, cancel_futures=True)
