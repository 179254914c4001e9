"""The app's HTTP routes, in three groups: the page and what it lists (:func:`add_page_routes`), one image's
explanation and its pictures (:func:`add_explanation_routes`), and the indexes' examples, atlases and class
concepts, and the saved concept dictionaries (:func:`add_dataset_routes`).

Each route only reads its request and calls the :class:`~blocklens.app.state.BlocklensApp`; errors are answered
by the handlers :func:`~blocklens.app.server.create_app` installs. Files are served only from the package's
``static/`` folder (Starlette's StaticFiles refuses paths outside it), icons only by their store key.
"""
from __future__ import annotations

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..images import bundled_images
from ..web.bundle import STATIC
from .checks import HTTPError
from .explanations import photo_thumbnail
from .state import BlocklensApp


def png(data: bytes, cache: str) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": cache})


async def read_upload(request: Request, cap: int) -> bytes:
    """The request's body, refused (413) as soon as it is over ``cap`` bytes: by its Content-Length, or while
    streaming when it has none or lies."""
    too_big = HTTPError(413, f"upload is over the {cap // (1024 * 1024)} MB limit")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def split_list(text: str | None) -> list[str] | None:
    """``"a, b,"`` -> ``["a", "b"]``; nothing -> None."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def add_page_routes(app: FastAPI, state: BlocklensApp) -> None:
    """The page and its static files, health, the model picker, the bundled photos, and job progress."""
    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health")
    def health():
        return {"ok": True, "preset": state.preset or "by device", "jobs_running": state.jobs.running()}

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
        return Response(photo_thumbnail(name), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/jobs/{ident}")
    def job(ident: str, since: int = 0):
        return state.job(ident).status(max(0, since))


def add_explanation_routes(app: FastAPI, state: BlocklensApp) -> None:
    """Explaining an image (posted bytes or a bundled photo's name), the explanation's document, photo and report,
    and icons and sprite sheets by store key."""
    @app.post("/api/explain")
    async def explain(request: Request, image: str | None = None, model: str = "efficientnet_lite0",
                      layers: str | None = None, classes: str | None = None):
        data = await read_upload(request, state.max_upload_bytes)

        def work():
            ident, held = state.explain(state.image_from(image, data), model, split_list(layers), split_list(classes))
            return state.document(ident, held)

        return await run_in_threadpool(work)

    @app.get("/api/explanations/{ident}")
    def explanation(ident: str):
        return state.document(ident, state.entry(ident))

    @app.get("/api/explanations/{ident}/image.png")
    def photo(ident: str):
        return png(state.explanations.photo_png(ident), "max-age=86400")

    @app.get("/api/explanations/{ident}/report.html")
    def report(ident: str):
        text, filename = state.explanations.report(ident)
        return Response(text, media_type="text/html",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.get("/api/sprites/{fingerprint}/{layer}/{name}")
    def sprite(fingerprint: str, layer: str, name: str):
        return png(state.sprite_png(fingerprint, layer, name), "no-cache")

    @app.get("/api/icons/{name}")
    def icon(name: str):
        key = name[:-4] if name.endswith(".png") else name
        return png(state.icon_png(key), "public, max-age=31536000, immutable")


def add_dataset_routes(app: FastAPI, state: BlocklensApp) -> None:
    """Over the store's activation indexes: the listing, dataset examples, atlases, and class concepts (started as
    a job, then fetched); the saved concept dictionaries (listed, then fetched by key)."""
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

    @app.get("/api/dictionaries")
    def dictionaries():
        return state.dictionary_list()

    @app.get("/api/dictionaries/{key}")
    def dictionary(key: str):
        return state.dictionary_document(key)
