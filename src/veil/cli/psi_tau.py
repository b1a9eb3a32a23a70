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
    from veil.psi.tau import TauError, choose_tau

    try:
        choice = choose_tau(ids, queries, epsilon, n, delta)
    except TauError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"tau: {choice.tau}")
    typer.echo(
        f"dummy rows per party: {choice.dummy_rows} (k*tau = {choice.ids}*{choice.tau}), "
        f"{100.0 * choice.overhead_fraction:.2f}% of N={choice.n}"
    )
    typer.echo(
        f"expected dummy matches per run: {choice.expected_dummy_matches:g}; "
        f"budget: epsilon={choice.epsilon:g}, delta={choice.delta:.3g} over "
        f"{choice.compositions} releases (achieved delta {choice.achieved_delta:.3g})"
    )
