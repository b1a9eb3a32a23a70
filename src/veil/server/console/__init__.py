"""The web console: server-rendered pages for providers, consumers and admins.

Jinja2 templates (autoescaped), a stylesheet and two small scripts served from this package;
no build step and no third-party assets at run time (the OpenAPI docs' Swagger UI and ReDoc
come from the `fastapi-offline` wheel). Pages are thin like the API routes: they call the
same services (`veil.jobs.service`, `veil.catalog`, `veil.identity`, the release ledger)
with the caller resolved from a session cookie instead of a bearer token.
"""

from __future__ import annotations

from veil.server.console.app import error_page, install, is_page

__all__ = ["error_page", "install", "is_page"]
