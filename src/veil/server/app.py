"""The FastAPI application: routers, error mapping, worker lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from veil import __version__
from veil.errors import VeilError, status_for
from veil.jobs.bundle import RUNTIME
from veil.release.manifest import ManifestError
from veil.server import schemas
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

    app = FastAPI(title="Veil", version=__version__, lifespan=lifespan)
    app.state.platform = platform
    for router in (admin.router, attestation.router, budget.router, datasets.router,
                   jobs.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(attestation.public)

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
    def runtime() -> dict[str, str]:
        """What `veil job digest` must use to reproduce the server's bundle digests."""
        return {"runtime": RUNTIME}

    return app


async def _handle(_: Request, exc: Exception) -> JSONResponse:
    """The one handler: the status comes from the exception's MRO (see `veil.errors`)."""
    status = status_for(exc, FOREIGN_STATUS)
    if status >= 500:
        log.error("request failed with %s", status, exc_info=exc)
    if status == 500:
        # A VeilError without a more specific class is a bug; its message was not vetted.
        return JSONResponse({"detail": "internal error"}, status_code=status)
    # Messages of these types are written to be safe to show: no secrets, no data values.
    return JSONResponse({"detail": str(exc)}, status_code=status)
