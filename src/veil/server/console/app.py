"""Wiring the console into the FastAPI app: pages, static files, offline API docs, headers."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from veil.server.console import pages
from veil.server.console.render import pygments_css
from veil.server.console.security import SecurityHeaders
from veil.server.console.templating import templates

STATIC_DIR = Path(__file__).parent / "static"


def _docs_assets() -> Path:
    """Swagger UI and ReDoc as shipped in the `fastapi-offline` wheel: no CDN at run time."""
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Serve the console at `/` and the OpenAPI docs offline at `/docs` and `/redoc`.

    The app must be created with ``docs_url=None, redoc_url=None`` (FastAPI's own pages load
    their assets from a CDN and run an inline script, which the CSP forbids).
    """
    app.add_middleware(SecurityHeaders)
    app.mount("/static/console", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.mount("/static/docs", StaticFiles(directory=_docs_assets()), name="docs-static")
    css = pygments_css()

    @app.get("/static/pygments.css", include_in_schema=False)
    async def pygments() -> Response:
        return Response(css, media_type="text/css")

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    async def swagger(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "docs_swagger.html", {})

    @app.get("/redoc", include_in_schema=False, response_class=HTMLResponse)
    async def redoc(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "docs_redoc.html", {})

    app.include_router(pages.router, include_in_schema=False)


PAGE_ROOTS = ("/signin", "/signout", "/provider", "/consumer", "/admin", "/audit")
_TITLES = {401: "Not signed in", 403: "Not allowed", 404: "Not found", 409: "Conflict",
           413: "Too large", 422: "Not accepted", 503: "Unavailable"}


def is_page(path: str) -> bool:
    """Whether a path is a console page (errors as HTML) rather than the JSON API."""
    return path == "/" or any(path == root or path.startswith(root + "/") for root in PAGE_ROOTS)


def error_page(request: Request, status: int, message: str) -> Response:
    """An error on a console page, as a page (the message is escaped like everything else)."""
    return templates.TemplateResponse(
        request, "error.html", {"me": None, "csrf": "", "status": status, "message": message,
                                "title": _TITLES.get(status, "Error")}, status_code=status)
