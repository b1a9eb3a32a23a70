"""`veil psi ...`: DPCA-PSI from the command line."""

from __future__ import annotations

import typer

from veil.cli.psi_tau import tau

app = typer.Typer(help="DPCA-PSI: multi-ID private set intersection with DP and secret shares.",
                  no_args_is_help=True)
app.command("tau")(tau)
