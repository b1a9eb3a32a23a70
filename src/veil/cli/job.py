"""`veil job ...`: digest, pre-flight, submit, wait, approve, review, bundle, attestation and
download."""

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


@app.command()
def preflight(
    files: list[Path] = FilesArg,
    inputs: list[str] = InputsOpt,
    outputs: list[str] = OutputsOpt,
    as_json: bool = typer.Option(False, "--json", help="print the whole report as JSON"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Run the bundle on your stage-1 views in the secure stage's sandbox and preview the gate.

    Same arguments as `veil job submit`. Prints, per output, what the release gate would do
    (auto-release, review, refused and why), ε needed against ε left on each budget, and the
    run's diagnostics if it fails. Nothing is charged, stored or released. Exits 1 if the run
    fails or any output would be refused.
    """
    with api_errors():
        report = client(url, token).preflight(_read(files), entrypoint=files[0].name,
                                              inputs=inputs, outputs=outputs)
    if as_json:
        print_json(report)
    else:
        _print_preflight(report)
    refused = any(o["verdict"] == "refused" for o in report["outputs"])
    if not report["ok"] or refused:
        raise typer.Exit(1)


def _print_preflight(report: dict[str, object]) -> None:
    views = report["views"]
    assert isinstance(views, dict)
    console.print(f"pre-flight of {report['digest']} on "
                  + ", ".join(f"{n} ({k} view)" for n, k in views.items())
                  + f": ran {report['run_s']} s; nothing charged or released", highlight=False,
                  soft_wrap=True)
    error = report.get("error")
    if isinstance(error, dict):
        console.print(f"[red]FAILED[/red] {error.get('reason')}", highlight=False,
                      soft_wrap=True)
    colours = {"auto-release": "green", "review": "yellow", "refused": "red"}
    for out in report["outputs"]:  # type: ignore[attr-defined]
        verdict = out["verdict"]
        cost = f" ε={out['epsilon']:g}" if out.get("epsilon") is not None else ""
        why = f": {out['reason']}" if out.get("reason") else ""
        console.print(f"[{colours[verdict]}]{verdict:>12}[/{colours[verdict]}] {out['name']} "
                      f"({out['kind']}{cost}){why}", highlight=False, soft_wrap=True)
    for row in report["budgets"]:  # type: ignore[attr-defined]
        if row["epsilon_left"] is None:
            left = "no budget set"
        else:
            left = (f"{row['epsilon_left']:g} left ({row['rule']})"
                    + ("" if row["fits"] else " — NOT ENOUGH"))
        console.print(f"budget {row['dataset']}: ε needed {row['epsilon_needed']:g}, {left}",
                      highlight=False, soft_wrap=True)


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
    output: str = typer.Argument(None, help="output name (or --all)"),
    to: Path = typer.Option(..., "--to", "-o", help="a file; with --all, a folder"),
    all_: bool = typer.Option(False, "--all",
                              help="every released output + manifest.json, token.jwt and "
                                   "attestation.json, ready for `veil attest verify`"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Download a released output, or with --all everything a consumer keeps (consumer only)."""
    if all_ == (output is not None):
        err_console.print("[red]error[/red]: name one OUTPUT or pass --all")
        raise typer.Exit(2)
    with api_errors():
        api = client(url, token)
        if all_:
            written = api.download_all(job_id, to)
            for path in written:
                console.print(f"  {path}", highlight=False)
            console.print(f"{len(written)} file(s) written to {to}; check them with "
                          f"`veil attest verify {to / 'token.jwt'} --jwks URL --outputs {to}`",
                          highlight=False)
            return
        data = api.output(job_id, output)
    to.write_bytes(data)
    console.print(f"{output} written to {to}")


@app.command()
def wait(
    job_id: str,
    until: list[str] = typer.Option([], "--until",
                                    help="state to wait for (repeat); default: released, "
                                         "output_review, failed, rejected or cancelled"),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Follow a job: its state, who still has to approve or review, and where time went.

    Exits 0 when the job ends well (released, or outputs in review), 1 when it failed, was
    rejected or cancelled, and 3 on timeout.
    """
    from veil.sdk.progress import WAIT_STATES, progress_line

    with api_errors():
        try:
            job = client(url, token).wait(
                job_id, set(until) or WAIT_STATES, timeout_s=timeout, poll_s=0.5,
                on_update=lambda j: console.print(progress_line(j), highlight=False,
                                                  soft_wrap=True))
        except TimeoutError as exc:
            err_console.print(f"[red]timeout[/red]: {exc}")
            raise typer.Exit(3) from None
    if job["state"] in ("failed", "rejected", "cancelled"):
        raise typer.Exit(1)


@app.command()
def bundle(
    job_id: str,
    to: Path = typer.Option(..., "--to", "-o", help="folder to write the bundle's files into"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Fetch a job's bundle (the code under approval), each file checked against its hash."""
    with api_errors():
        api = client(url, token)
        info = api.bundle(job_id)
        written = api.download_bundle(job_id, to)
    for path in written:
        console.print(f"  {path}", highlight=False)
    others = [f["path"] for f in info["files"] if f["path"] != info["entrypoint"]]
    command = ["veil job digest", str(to / info["entrypoint"]), *(str(to / o) for o in others),
               *(f"-i {i}" for i in info["inputs"]), *(f"--output {o}" for o in info["outputs"])]
    console.print(f"digest {info['digest']}\nrecompute it: {' '.join(command)}", highlight=False)


@app.command()
def attestation(
    job_id: str,
    to: Path = typer.Option(None, "--to", "-o", help="also save the token to this file"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """A job's final attestation token, checked against the server's JWKS, claim by claim.

    For a verdict that trusts nothing of the server but a JWKS you hold, download the outputs
    and run `veil attest verify`.
    """
    from veil.sdk.verify import verify_token

    with api_errors():
        api = client(url, token)
        proof = api.attestation(job_id)
        keys = api.jwks()
    verdict = verify_token(proof["token"], keys)
    for name, ok, detail in verdict.checks:
        mark = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
        console.print(f"{mark} {name}: {detail}", highlight=False)
    claims = verdict.claims
    xv = claims.get("x-veil", {})
    bundle_claims = claims.get("submods", {}).get("bundle", {})
    console.print(f"     job={xv.get('job')} phase={xv.get('phase')} backend={xv.get('backend')} "
                  f"hardware_backed={xv.get('hardware_backed')} "
                  f"bundle={bundle_claims.get('digest', '-')}", highlight=False)
    for entry in proof["manifest"].get("outputs", []):
        console.print(f"     output {entry.get('name')}: {entry.get('kind')} "
                      f"sha256={entry.get('sha256')}", highlight=False)
    if to is not None:
        to.write_text(proof["token"] + "\n")
        console.print(f"token written to {to}")
    if not verdict.ok:
        raise typer.Exit(1)


@app.command()
def template(
    kind: str = typer.Argument(..., help="the template: ads-measurement"),
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="folder to write into"),
    publisher: str = typer.Option(..., "--publisher", help="impressions dataset owner/name"),
    advertiser: str = typer.Option(..., "--advertiser", help="conversions dataset owner/name"),
    id_column: str = typer.Option("user_id", "--id-column", help="the shared privacy id"),
    window: float = typer.Option(7.0, "--window", help="attribution window: 0 < t1-t0 <= it"),
    campaigns: list[str] = typer.Option([], "--campaign", help="keep only these (repeat)"),
    cap: float = typer.Option(100.0, "--cap", help="conversion values are clipped to it"),
    epsilon: float = typer.Option(1.0, "--epsilon", help="total, split over the two outputs"),
) -> None:
    """Write a ready clean-room job: the notebook and its pinned plans (veil.plans.json)."""
    from veil.names import InvalidName, check_dataset_ref
    from veil.privacy.plans import PINNED_PLANS_FILE, pin_plans
    from veil.templates.ads import OUTPUTS, AdsParams, notebook, plans

    if kind != "ads-measurement":
        err_console.print(f"[red]error[/red]: unknown template {kind!r}; try ads-measurement")
        raise typer.Exit(1)
    try:
        for name in (publisher, advertiser):
            check_dataset_ref(name)
        params = AdsParams(publisher=publisher, advertiser=advertiser, id_column=id_column,
                           window=window, cap=cap, epsilon=epsilon, campaigns=tuple(campaigns))
        pinned = plans(params)
    except (InvalidName, ValueError) as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "ads_measurement.ipynb").write_bytes(notebook(params))
    (out / PINNED_PLANS_FILE).write_bytes(pin_plans(pinned))
    outputs = " ".join(f"--output {o}" for o in OUTPUTS)
    console.print(f"wrote {out}/ads_measurement.ipynb and {out}/{PINNED_PLANS_FILE}; submit: "
                  f"veil job submit {out}/ads_measurement.ipynb {out}/{PINNED_PLANS_FILE} "
                  f"-i {publisher} -i {advertiser} {outputs}", highlight=False)
