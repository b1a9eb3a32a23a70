"""`veil serve`: the API server and its worker in one process.

Sandbox limits (``--sandbox-*``, or ``VEIL_SANDBOX_*`` in the environment) are the operator's
ceiling; a dataset policy's ``[limits]`` can only lower them for jobs reading that dataset.
"""

from __future__ import annotations

from pathlib import Path

import typer

from veil.cli._common import err_console
from veil.settings import Settings


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8470, "--port"),
    home: Path = typer.Option(None, "--home", envvar="VEIL_HOME", help="state folder"),
    database_url: str = typer.Option(None, "--database-url", envvar="VEIL_DATABASE_URL",
                                     help="SQLAlchemy URL, e.g. postgresql+psycopg://..."),
    workers: int = typer.Option(1, "--workers", help="worker threads (0: API only)"),
    insecure_dev: bool = typer.Option(
        False, "--insecure-dev",
        help="run jobs WITHOUT bubblewrap isolation; everything produced is marked insecure"),
    max_upload_bytes: int = typer.Option(None, "--max-upload-bytes"),
    sandbox_wall_s: int = typer.Option(None, "--sandbox-wall-s", min=1,
                                       help="wall-clock limit of a job, seconds"),
    sandbox_cpu_s: int = typer.Option(None, "--sandbox-cpu-s", min=1,
                                      help="CPU-time limit of a job, seconds"),
    sandbox_memory_bytes: int = typer.Option(None, "--sandbox-memory-bytes", min=1,
                                             help="memory limit of a job, bytes"),
    sandbox_max_processes: int = typer.Option(None, "--sandbox-max-processes", min=8,
                                              help="process/thread limit of a job"),
    sandbox_output_bytes: int = typer.Option(None, "--sandbox-output-bytes", min=1,
                                             help="total output size limit of a job, bytes"),
) -> None:
    """Serve the API (FastAPI + uvicorn); migrations are applied on start."""
    import uvicorn

    from veil.server.app import create_app
    from veil.server.platform import create_platform

    try:
        settings = Settings.from_env(home=home, database_url=database_url,
                                     insecure_dev=insecure_dev or None,
                                     max_upload_bytes=max_upload_bytes,
                                     sandbox_wall_s=sandbox_wall_s, sandbox_cpu_s=sandbox_cpu_s,
                                     sandbox_memory_bytes=sandbox_memory_bytes,
                                     sandbox_max_processes=sandbox_max_processes,
                                     sandbox_output_bytes=sandbox_output_bytes)
    except ValueError as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    if workers:
        problem = _secure_stage_missing(settings)
        if problem is not None:
            err_console.print(f"[red]error[/red]: {problem} (or pass --insecure-dev, unsafe)")
            raise typer.Exit(2)
    if settings.insecure_dev:
        err_console.print("[bold red]INSECURE DEV MODE[/bold red]: jobs are not isolated; "
                          "every job and output is marked insecure.")
    platform = create_platform(settings)
    attestation = platform.attestation
    if workers and not settings.insecure_dev and attestation.swtpm_template is None:
        platform.close()
        err_console.print(f"[red]error[/red]: attestation unavailable: {attestation.swtpm_problem}")
        raise typer.Exit(2)
    uvicorn.run(create_app(platform, workers=workers), host=host, port=port, log_level="info")


def _secure_stage_missing(settings: Settings) -> str | None:
    """Why jobs could not run here, checked before serving (fail closed, not job by job).

    Without the insecure-dev flag every job needs bubblewrap, swtpm and tpm2-pytss; a server that
    started without them would fail each job instead.
    """
    from veil.server.platform import operator_limits
    from veil.tee.attestation import swtpm_missing
    from veil.tee.backends import secure_stage_for
    from veil.tee.sandbox import SandboxError, SandboxUnavailable

    try:
        operator_limits(settings)
        secure_stage_for(insecure_dev=settings.insecure_dev, home=settings.home)
    except SandboxUnavailable as exc:
        return str(exc)
    except SandboxError as exc:
        return f"invalid sandbox limits: {exc}"
    if settings.insecure_dev:
        return None
    return swtpm_missing()
