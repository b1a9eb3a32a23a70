"""`veil dataset ...`: upload with a policy, list, show, fetch a stage-1 view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TimeElapsedColumn,
)

from veil.cli._common import TokenOption, UrlOption, api_errors, client, console, print_json

app = typer.Typer(help="Datasets: upload, list, views, policy, delete.", no_args_is_help=True)


@app.command()
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV or Parquet file"),
    name: str = typer.Option(..., "--name"),
    policy: Path = typer.Option(..., "--policy", exists=True, dir_okay=False,
                                help="policy document (.toml or .json)"),
    wait: bool = typer.Option(True, "--wait/--no-wait",
                              help="wait for the views to be built (shows their progress)"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Encrypt and register a dataset; its stage-1 views are built in the background."""
    fmt = "json" if policy.suffix == ".json" else "toml"
    api = client(url, token)
    with api_errors(), Progress(SpinnerColumn(), "{task.description}", BarColumn(),
                                TaskProgressColumn(), TimeElapsedColumn(),
                                console=console, transient=True) as progress:
        task = progress.add_task(f"uploading {path.name} ({path.stat().st_size:,} bytes)",
                                 total=None)
        info = api.upload(name, path, policy=policy.read_text(), policy_format=fmt, wait=False)
        console.print(f"{info['name']}: {info['rows']:,} rows stored encrypted; building views "
                      f"{', '.join((info.get('build') or {}).get('views', []))}")
        if wait:
            shown: list[str] = []

            def show_build(record: dict[str, Any]) -> None:
                build = record.get("build") or {}
                for done in build.get("done", []):
                    if done not in shown:
                        shown.append(done)
                        console.print(f"  [green]done[/green] {done}")
                phase = build.get("phase", record["status"])
                progress.update(task, description=f"building: {phase}", total=1.0,
                                completed=float(build.get("progress", 0.0)))

            info = api.wait_ready(info["name"], progress=show_build)
    if not wait:
        console.print(f"{info['name']}: {info['status']} (veil dataset show {info['name']})")
        return
    seconds = (info.get("build") or {}).get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    console.print(f"{info['name']}: ready{took}, views {', '.join(info['views'])}")
    for kind, meta in info.get("view_info", {}).items():
        if "dp" in meta:
            console.print(f"  {kind}: epsilon {meta['dp']['epsilon']:.3g} charged to the budget")
        for warning in (meta.get("summary") or {}).get("warnings", []):
            console.print(f"  [yellow]warning[/yellow] {kind}: {warning}")
    joins: dict[str, Any] = next(
        (m["join_keys"] for m in info.get("view_info", {}).values() if "join_keys" in m), {})
    for column, drawn in joins.items():
        matched = ", ".join(f"{n:,} from {other}" for other, n in drawn["matched"].items())
        console.print(f"  join key {column}: {drawn['keys']:,} view keys "
                      f"({matched or 'no earlier dataset to match'}); epsilon "
                      f"{drawn['epsilon']:.3g} charged to the budget")
    print_json(info["schema"])


@app.command("list")
def list_(url: str = UrlOption, token: str = TokenOption) -> None:
    with api_errors():
        for info in client(url, token).datasets():
            console.print(f"{info['name']}\t{info['status']}\trows={info['rows']}\t"
                          f"views={','.join(info['views'])}")


@app.command()
def show(name: str, url: str = UrlOption, token: str = TokenOption) -> None:
    with api_errors():
        print_json(client(url, token).dataset(name))


@app.command()
def view(
    name: str,
    kind: str = typer.Option(None, "--kind", help="mock | sample | synthetic"),
    output: Path = typer.Option(..., "--output", "-o", help="where to write the Parquet view"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Download a stage-1 view (never the raw data)."""
    with api_errors():
        served, data = client(url, token).view(name, kind)
    output.write_bytes(data)
    console.print(f"{served} view of {name} written to {output}")


@app.command()
def policy(
    name: str,
    policy: Path = typer.Option(..., "--policy", exists=True, dir_okay=False,
                                help="the new policy document (.toml or .json)"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Replace a dataset's policy (validated; fields the views were built under are fixed)."""
    fmt = "json" if policy.suffix == ".json" else "toml"
    with api_errors():
        result = client(url, token).update_policy(name, policy.read_text(), policy_format=fmt)
    for line in result["diff"]:
        console.print(line, highlight=False, markup=False)


@app.command()
def delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Delete a dataset's data, views and key (the audit log keeps the fact)."""
    if not yes:
        typer.confirm(f"delete {name} for good?", abort=True)
    with api_errors():
        result = client(url, token).delete_dataset(name)
    console.print(f"{result['name']} deleted; jobs rejected: {len(result['jobs_rejected'])}")


@app.command()
def fidelity(
    name: str,
    output: Path = typer.Option(..., "--output", "-o", help="where to write the PNG"),
    kind: str = typer.Option("synthetic", "--kind"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """The provider's fidelity report of a DP view: figures, warnings, and PNG plots."""
    with api_errors():
        api = client(url, token)
        report = (api.dataset(name)["view_info"].get(kind) or {}).get("fidelity")
        png = api.fidelity_plot(name, kind)
    output.write_bytes(png)
    if report:
        rel = report.get("relationships", {})
        console.print(f"{name} {kind} view: mean |delta corr| {rel.get('mean_corr_delta')}, "
                      f"max KS {rel.get('max_ks')}, tstr {report.get('tstr', '-')}")
        for warning in report.get("warnings", []):
            console.print(f"[yellow]warning[/yellow] {warning}")
    console.print(f"plots written to {output}")
