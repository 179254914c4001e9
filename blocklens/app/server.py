"""The FastAPI application around a :class:`~blocklens.app.state.BlocklensApp` (:func:`create_app`): its error
answers and security headers, and its routes; and running it with uvicorn (:func:`serve`, 127.0.0.1 by default).

A failing request answers a JSON error (``{"error": ...}``: its own status, 400 for a
:class:`~blocklens.errors.BlocklensError`, 500 for anything else) and leaves the server as it was.
"""
from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ..errors import BlocklensError
from .checks import HTTPError
from .routes import add_dataset_routes, add_explanation_routes, add_page_routes
from .state import BlocklensApp

log = logging.getLogger("blocklens.web")

HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def add_error_answers(app: FastAPI) -> None:
    """Every failure answers JSON ``{"error": message}``; an unexpected one is logged and answers 500."""
    @app.exception_handler(HTTPError)
    async def http_error(request, exc: HTTPError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(BlocklensError)
    async def blocklens_error(request, exc: BlocklensError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def any_error(request, exc: Exception):
        log.exception("request %s failed", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server is still running"},
                            status_code=500)


def add_security_headers(app: FastAPI) -> None:
    """Every answer says ``nosniff`` (a type is never guessed from the content) and sends no referrer."""
    @app.middleware("http")
    async def headers(request, call_next):
        response = await call_next(request)
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        return response


def create_app(state: BlocklensApp | None = None, **kw) -> FastAPI:
    """The FastAPI application around ``state`` (a new :class:`BlocklensApp` built from ``kw`` by default)."""
    state = state or BlocklensApp(**kw)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = FastAPI(title="blocklens", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.blocklens = state
    add_error_answers(app)
    add_security_headers(app)
    add_page_routes(app, state)
    add_explanation_routes(app, state)
    add_dataset_routes(app, state)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, state: BlocklensApp | None = None, **kw) -> None:
    """Run the app (``state``, or a new :class:`BlocklensApp` built from ``kw``) with uvicorn until interrupted.
    The models given as ``models=`` specs load first, so that a bad spec fails before the server starts."""
    import uvicorn

    state = state or BlocklensApp(**kw)
    for spec in state.specs:
        state.model(spec)
    uvicorn.run(create_app(state), host=host, port=port, log_level="info")
