"""The FastAPI application: routers, error mapping, worker lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from veil import __version__
from veil.errors import VeilError, status_for
from veil.jobs.bundle import RUNTIME
from veil.release.manifest import ManifestError
from veil.server import console, schemas
from veil.server.deps import CallerDep
from veil.server.platform import Platform
from veil.server.routes import admin, attestation, budget, datasets, jobs
from veil.tee.sandbox import SandboxError

log = logging.getLogger("veil.server")

# Exceptions of parts outside the VeilError tree, with their status (see veil.errors).
FOREIGN_STATUS: dict[type[Exception], int] = {
    SandboxError: 503,
    ManifestError: 422,
}


def create_app(platform: Platform, *, workers: int = 1) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        platform.start_workers(workers)  # with workers=0: only the view builder
        yield
        platform.close()

    # FastAPI's own /docs and /redoc load their assets from a CDN: the console serves them.
    app = FastAPI(title="Veil", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.platform = platform
    for router in (admin.router, attestation.router, budget.router, datasets.router,
                   jobs.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(attestation.public)
    console.install(app)

    handled: list[type[Exception]] = [VeilError, *FOREIGN_STATUS]
    for exc_type in handled:
        app.add_exception_handler(exc_type, _handle)

    @app.get("/healthz", response_model=schemas.Health)
    async def healthz() -> dict[str, object]:
        # On the event loop, not the thread pool: it must answer even when every pool
        # thread waits on the database.
        return {"status": "ok", "version": __version__,
                "insecure_dev": platform.settings.insecure_dev}

    @app.get("/api/v1/runtime", response_model=schemas.Runtime)
    def runtime(caller: CallerDep) -> dict[str, object]:
        """What `veil job digest` must use to reproduce the server's bundle digests, and the
        secure stage's packages (for any signed-in user: versions are no one's data)."""
        from veil.tee.runtime import describe

        return {"runtime": RUNTIME, **describe()}

    return app


async def _handle(request: Request, exc: Exception) -> Response:
    """The one handler: the status comes from the exception's MRO (see `veil.errors`).

    Console pages get the same status and message as an HTML page.
    """
    status = status_for(exc, FOREIGN_STATUS)
    if status >= 500:
        log.error("request failed with %s", status, exc_info=exc)
    # A VeilError without a more specific class is a bug; its message was not vetted.
    # Messages of the other types are written to be safe to show: no secrets, no data values.
    detail = "internal error" if status == 500 else str(exc)
    if console.is_page(request.url.path):
        return console.error_page(request, status, detail)
    return JSONResponse({"detail": detail}, status_code=status)
