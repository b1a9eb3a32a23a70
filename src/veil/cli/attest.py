"""`veil attest ...`: check a secure-stage token offline against your own files.

The consumer trusts only the verifier's JWKS: the bundle digest is recomputed from the
consumer's own notebook, and every output file is re-hashed against the token's manifest.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from veil.sdk.verify import AttestInputError, load_jwks, load_token, verify_token

app = typer.Typer(help="Attestation: verify secure-stage tokens offline.", no_args_is_help=True)
_console = Console(soft_wrap=True)


@app.callback()
def _group() -> None:
    """Attestation: verify secure-stage tokens offline."""

@app.command()
def verify(
    token: str = typer.Argument(..., help="the token, or a file holding it"),
    jwks: str = typer.Option(..., "--jwks", help="verifier JWKS: a file or an http(s) URL"),
    bundle: list[Path] = typer.Option(
        [], "--bundle", exists=True, dir_okay=False,
        help="your copy of the bundle's files (repeat; entrypoint first)"),
    outputs: Path | None = typer.Option(
        None, "--outputs", exists=True, file_okay=False,
        help="downloaded outputs folder (with manifest.json)"),
    issuer: str | None = typer.Option(None, "--issuer", help="require this token issuer"),
) -> None:
    """Verify a token's signature, expiry, claims, bundle digest and output hashes."""
    try:
        keys = load_jwks(jwks)
        raw = load_token(token)
    except AttestInputError as exc:
        _console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    verdict = verify_token(raw, keys, bundle_files=bundle, outputs_dir=outputs, issuer=issuer)
    for name, ok, detail in verdict.checks:
        mark = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
        _console.print(f"{mark} {name}: {detail}", highlight=False)
    for name in verdict.not_released:
        _console.print(f"[yellow]----[/yellow] output {name}: not released (no file in the "
                       "folder: rejected or refused at review); nothing to verify", highlight=False)
    c = verdict.claims
    if c:
        xv = c.get("x-veil", {})
        _console.print(
            f"     job={xv.get('job')} phase={xv.get('phase')} backend={xv.get('backend')} "
            f"hwmodel={c.get('hwmodel')} dbgstat={c.get('dbgstat')} "
            f"hardware_backed={xv.get('hardware_backed')}", highlight=False)
        executor = c.get("submods", {}).get("runtime", {}).get("release_executor")
        if executor:  # the trusted code that computed every DP and aggregate output
            _console.print(f"     release_executor={executor}", highlight=False)
    if verdict.ok:
        _console.print("[bold green]VERIFIED[/bold green]")
    else:
        _console.print("[bold red]NOT VERIFIED[/bold red]")
        raise typer.Exit(1)
