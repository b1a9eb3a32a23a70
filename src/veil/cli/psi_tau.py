"""`veil psi tau`: the IntersectMask dummy parameter from a privacy budget."""

from __future__ import annotations

import typer


def tau(
    ids: int = typer.Option(..., "--ids", help="identifier columns per record (k)"),
    queries: int = typer.Option(..., "--queries", help="queries allowed (T)"),
    epsilon: float = typer.Option(..., "--epsilon"),
    n: int = typer.Option(..., "--n", help="rows per party (N)"),
    delta: float | None = typer.Option(None, "--delta", help="default 1/(10N)"),
) -> None:
    """Print the smallest tau meeting (epsilon, delta) over k*T releases."""
    raise typer.Exit(code=2)
