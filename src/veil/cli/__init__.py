"""The `veil` command: one Typer app, one sub-app per part.

Each part's commands live in their own module here and import their heavy
dependencies inside the command bodies, so `veil --help` stays fast.
"""

from __future__ import annotations

import typer

from veil.cli import admin, attest, budget, dataset, demo, job, lab, psi, runtime, serve

app = typer.Typer(
    name="veil",
    help="Veil: privacy-preserving data collaboration.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(admin.app, name="admin")
app.add_typer(dataset.app, name="dataset")
app.add_typer(job.app, name="job")
app.add_typer(psi.app, name="psi")
app.add_typer(attest.app, name="attest")
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.command("budget")(budget.budget)
app.command("lab", context_settings={"allow_extra_args": True,
                                     "ignore_unknown_options": True})(lab.lab)
app.command("runtime")(runtime.runtime)


def main() -> None:
    app()
