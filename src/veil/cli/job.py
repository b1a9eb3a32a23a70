"""`veil job ...`: digest, submit, approve, review and download."""

from __future__ import annotations

from pathlib import Path

import typer

from veil.cli._common import (
    TokenOption,
    UrlOption,
    api_errors,
    client,
    console,
    err_console,
    print_json,
)

app = typer.Typer(help="Jobs: measure, submit, approve, review, download.", no_args_is_help=True)

FilesArg = typer.Argument(..., exists=True, dir_okay=False,
                          help="the entrypoint (.ipynb or .py) first, then other files")
InputsOpt = typer.Option(..., "--input", "-i", help="dataset owner/name (repeat)")
OutputsOpt = typer.Option([], "--output", help="declared output name (repeat)")


def _read(files: list[Path]) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in files}


@app.command()
def digest(
    files: list[Path] = FilesArg,
    inputs: list[str] = InputsOpt,
    outputs: list[str] = OutputsOpt,
    runtime: str = typer.Option(None, "--runtime", help="default: this installation's runtime"),
) -> None:
    """Recompute a bundle's digest locally: what providers approve."""
    from veil.jobs.bundle import RUNTIME, BundleError, make_bundle
    from veil.names import InvalidName

    try:
        bundle = make_bundle(_read(files), entrypoint=files[0].name, inputs=inputs,
                             outputs=outputs, runtime=runtime or RUNTIME)
    except (BundleError, InvalidName) as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None
    console.print(bundle.digest, highlight=False)


@app.command()
def pin(
    outputs_dir: Path = typer.Argument(..., exists=True, file_okay=False,
                                       help="the $VEIL_OUTPUTS folder of a stage-1 run"),
    to: Path = typer.Option(Path("veil.plans.json"), "--to", "-o"),
) -> None:
    """Pin the queries a stage-1 run published: add the file to the bundle you submit."""
    from veil.privacy.plans import PINNED_PLANS_FILE, PlanError, pin_plans
    from veil.sdk.outputs import collect_plans

    if to.name != PINNED_PLANS_FILE:
        err_console.print(f"[red]error[/red]: the file must be named {PINNED_PLANS_FILE}")
        raise typer.Exit(1)
    try:
        plans = collect_plans(outputs_dir)
    except (PlanError, OSError, ValueError) as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None
    to.write_bytes(pin_plans(plans))
    console.print(f"pinned {len(plans)} plan(s) in {to}: {', '.join(sorted(plans)) or '-'}")


@app.command()
def submit(
    files: list[Path] = FilesArg,
    inputs: list[str] = InputsOpt,
    outputs: list[str] = OutputsOpt,
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Submit a notebook or script for the secure stage."""
    with api_errors():
        job = client(url, token).submit(_read(files), entrypoint=files[0].name, inputs=inputs,
                                        outputs=outputs)
    console.print(f"job {job['id']} {job['state']}\ndigest {job['digest']}", highlight=False)


@app.command("list")
def list_(url: str = UrlOption, token: str = TokenOption) -> None:
    with api_errors():
        for job in client(url, token).jobs():
            console.print(f"{job['id']}\t{job['state']}\t{','.join(job['inputs'])}")


@app.command()
def show(job_id: str, url: str = UrlOption, token: str = TokenOption) -> None:
    with api_errors():
        print_json(client(url, token).job(job_id))


@app.command()
def approve(job_id: str, digest: str = typer.Option(..., "--digest",
                                                    help="the digest you reviewed"),
            url: str = UrlOption, token: str = TokenOption) -> None:
    """Approve a job's bundle digest for your data."""
    with api_errors():
        job = client(url, token).approve(job_id, digest)
    console.print(f"job {job_id} {job['state']}")


@app.command("auto-approve")
def auto_approve(job_id: str, url: str = UrlOption, token: str = TokenOption) -> None:
    """Approve this job's digest automatically, from now on, when its consumer submits it."""
    with api_errors():
        rule = client(url, token).auto_approve(job_id)
    console.print(f"{rule['digest']} is approved automatically for {rule['consumer']} on "
                  f"{', '.join(rule['datasets'])}", highlight=False)


@app.command()
def reject(job_id: str, reason: str = typer.Option(None, "--reason"),
           url: str = UrlOption, token: str = TokenOption) -> None:
    """Reject a job (or revoke your approval before it runs)."""
    with api_errors():
        job = client(url, token).reject(job_id, reason)
    console.print(f"job {job_id} {job['state']}")


@app.command()
def cancel(job_id: str, url: str = UrlOption, token: str = TokenOption) -> None:
    with api_errors():
        job = client(url, token).cancel(job_id)
    console.print(f"job {job_id} {job['state']}")


@app.command()
def review(
    job_id: str,
    output: str = typer.Argument(..., help="output name"),
    decision: str = typer.Option(..., "--decision", help="approve | reject"),
    reason: str = typer.Option(None, "--reason"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """A provider's verdict on an output waiting for review."""
    with api_errors():
        job = client(url, token).review_output(job_id, output, decision, reason)
    status = next(o["status"] for o in job["outputs"] if o["name"] == output)
    console.print(f"output {output} {status}; job {job['state']}")


@app.command()
def download(
    job_id: str,
    output: str = typer.Argument(..., help="output name"),
    to: Path = typer.Option(..., "--to", "-o"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Download a released output (consumer only)."""
    with api_errors():
        data = client(url, token).output(job_id, output)
    to.write_bytes(data)
    console.print(f"{output} written to {to}")
