"""The FastAPI application: routers, error mapping, worker lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from veil import __version__
from veil.catalog.errors import CatalogError, UploadTooLarge
from veil.identity import Conflict, Forbidden, IdentityError, NotFound
from veil.jobs.bundle import RUNTIME, BundleError
from veil.jobs.lifecycle import IllegalTransition, StaleState
from veil.jobs.service import JobError
from veil.privacy.errors import PrivacyError
from veil.server.platform import Platform
from veil.server.routes import admin, attestation, budget, datasets, jobs

log = logging.getLogger("veil.server")

_STATUS: list[tuple[type[Exception], int]] = [
    (NotFound, 404),
    (Forbidden, 403),
    (UploadTooLarge, 413),
    (Conflict, 409),
    (IllegalTransition, 409),
    (StaleState, 409),
    (CatalogError, 422),
    (BundleError, 422),
    (JobError, 422),
    (IdentityError, 422),
    (PrivacyError, 422),
]


def create_app(platform: Platform, *, workers: int = 1) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if workers:
            platform.start_workers(workers)
        yield
        platform.close()

    app = FastAPI(title="Veil", version=__version__, lifespan=lifespan)
    app.state.platform = platform
    for router in (admin.router, attestation.router, budget.router, datasets.router,
                   jobs.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(attestation.public)

    for exc_type, status in _STATUS:
        app.add_exception_handler(exc_type, _handler(status))

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        # On the event loop, not the thread pool: it must answer even when every pool
        # thread waits on the database.
        return {"status": "ok", "version": __version__,
                "insecure_dev": platform.settings.insecure_dev}

    @app.get("/api/v1/runtime")
    def runtime() -> dict[str, str]:
        """What `veil job digest` must use to reproduce the server's bundle digests."""
        return {"runtime": RUNTIME}

    return app


def _handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        # Messages of these types are written to be safe to show: no secrets, no data values.
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handle
