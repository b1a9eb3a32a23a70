"""Shared CLI plumbing: the API client from flags/env, and error reporting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from veil.sdk.client import ApiError, Client

console = Console()
err_console = Console(stderr=True)

UrlOption = typer.Option(None, "--url", envvar="VEIL_URL", help="server URL")
TokenOption = typer.Option(None, "--token", envvar="VEIL_TOKEN", help="API token")


def client(url: str | None, token: str | None) -> Client:
    return Client(url, token)


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn API refusals into a one-line message and exit code 1."""
    try:
        yield
    except ApiError as exc:
        err_console.print(f"[red]error[/red] ({exc.status}): {exc.detail}")
        raise typer.Exit(1) from None


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))

