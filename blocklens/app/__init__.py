"""The local web app, ``blocklens serve``: FastAPI, all state in a :class:`BlocklensApp`.

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

The modules, bottom to top:

- ``checks``: the address patterns and :class:`HTTPError`;  ``cache``: the :class:`LRU` every cache is;
  ``settings``: what an app is set to (:class:`Settings`);
- ``jobs``: the job records (:class:`RenderJob`, :class:`ConceptsJob`) and the bounded :class:`JobRegistry`;
- ``models``: the served models, one copy per role, each with its lock (:class:`ModelPool`);
- ``explanations``: explanations, their render jobs, icons;  ``datasets``: indexes, examples, atlases, concepts;
- ``state``: :class:`BlocklensApp`, which makes all of the above in one place;
- ``routes``: the HTTP routes, in groups;  ``server``: :func:`create_app` and :func:`serve`.
"""
from __future__ import annotations

from .cache import LRU
from .checks import HTTPError
from .explanations import MAX_LAYERS
from .jobs import ConceptsJob, JobRegistry, RenderJob
from .server import create_app, serve
from .settings import MAX_JOBS, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, Settings
from .state import BlocklensApp

__all__ = ["BlocklensApp", "create_app", "serve", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "MAX_LAYERS", "MAX_JOBS",
           "HTTPError", "LRU", "Settings", "RenderJob", "ConceptsJob", "JobRegistry"]
