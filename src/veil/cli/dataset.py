"""`veil dataset ...`: upload with a policy, list, show, fetch a stage-1 view."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn

from veil.cli._common import TokenOption, UrlOption, api_errors, client, console, print_json

app = typer.Typer(help="Datasets: upload, list, views, policy, delete.", no_args_is_help=True)


@app.command()
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV or Parquet file"),
    name: str = typer.Option(..., "--name"),
    policy: Path = typer.Option(..., "--policy", exists=True, dir_okay=False,
                                help="policy document (.toml or .json)"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Encrypt and register a dataset; builds its stage-1 views."""
    fmt = "json" if policy.suffix == ".json" else "toml"
    with api_errors(), Progress(SpinnerColumn(), "{task.description}", TimeElapsedColumn(),
                                console=console, transient=True) as progress:
        progress.add_task(f"uploading {path.name} ({path.stat().st_size:,} bytes)")
        info = client(url, token).upload(name, path, policy=policy.read_text(),
                                         policy_format=fmt)
    console.print(f"{info['name']}: {info['rows']:,} rows, views {', '.join(info['views'])}")
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
