"""`veil demo`: the full two-stage flow on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from veil.cli._common import console, err_console


def demo(
    home: Path = typer.Option(None, "--home", help="keep state here (default: a temp folder)"),
    patients: int = typer.Option(3000, "--patients", help="size of the generated data"),
    insecure_dev: bool = typer.Option(False, "--insecure-dev",
                                      help="run without bubblewrap (marked insecure)"),
) -> None:
    """Run the whole story: two providers, one researcher, a real server on loopback."""
    from veil.demo import DemoFailed, run_demo

    try:
        run_demo(home, patients=patients, insecure_dev=insecure_dev, console=console)
    except DemoFailed as exc:
        err_console.print(f"[red]demo failed[/red]: {exc}")
        raise typer.Exit(1) from None
    console.print("[green]demo passed[/green]: every step worked")
