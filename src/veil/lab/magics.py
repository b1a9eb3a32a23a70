"""``%veil``: the workspace from any IPython front end (Notebook 7, VS Code, a terminal).

    %load_ext veil
    %veil submit [PATH] [--input owner/name ...] [--output NAME ...]  # default: this notebook
    %veil jobs
    %veil wait JOB [--timeout S]
    %veil download JOB [--to DIR]
    %veil verify JOB                               # after download

Connection settings come from ``VEIL_URL`` / ``VEIL_TOKEN`` in the kernel's environment (the
Veil kernel of `veil lab` carries them); they are read when the extension loads and never
printed. Downloads and the copy of the submitted files go under ``veil-results/JOB/``.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

from veil.lab import workspace
from veil.sdk.client import ApiError, Client
from veil.stage import ENV_OUTPUTS

_FINAL = ("released", "failed", "rejected", "cancelled", "output_review")


class VeilMagics:
    """The state behind ``%veil``: one client and the folder results go to."""

    def __init__(self, shell: Any, client: Client, root: Path) -> None:
        self.shell = shell
        self.client = client
        self.root = root

    def __call__(self, line: str) -> Any:
        try:
            args = _parser().parse_args(shlex.split(line))
        except SystemExit:  # argparse already printed the usage
            return None
        try:
            return getattr(self, f"do_{args.command}")(args)
        except (ApiError, workspace.LabError, TimeoutError) as exc:
            print(f"veil: {exc}")
            return None

    def do_submit(self, args: argparse.Namespace) -> dict[str, Any]:
        path = Path(args.path) if args.path else self._current_notebook()
        prepared = workspace.prepare(self.client, path.resolve(), args.input or (),
                                     args.output or ())
        print(f"bundle {prepared.entrypoint} inputs {', '.join(prepared.inputs)}"
              f"{' (plans pinned)' if prepared.pinned else ''}\ndigest {prepared.digest}")
        job = workspace.submit(self.client, prepared, self.root)
        print(f"job {job['id']} {job['state']}")
        return workspace.job_summary(job)

    def do_jobs(self, args: argparse.Namespace) -> list[dict[str, Any]]:
        jobs = [workspace.job_summary(j) for j in self.client.jobs()]
        for j in jobs:
            waiting = ", ".join(j["awaiting_approval"])
            print(f"{j['id']}  {j['state']:<16} {','.join(j['inputs'])}"
                  + (f"  awaiting approval: {waiting}" if waiting else ""))
        return jobs

    def do_wait(self, args: argparse.Namespace) -> dict[str, Any]:
        job = self.client.wait(args.job, _FINAL, timeout_s=args.timeout, poll_s=0.5)
        summary = workspace.job_summary(job)
        print(f"job {job['id']} {job['state']}" + (f": {job['reason']}" if job["reason"] else ""))
        return summary

    def do_download(self, args: argparse.Namespace) -> list[Path]:
        folder = Path(args.to) if args.to else workspace.job_folder(self.root, args.job)
        folder.mkdir(parents=True, exist_ok=True)
        paths = workspace.download(self.client, args.job, folder)
        print(f"{len(paths)} files written to {folder}")
        return paths

    def do_verify(self, args: argparse.Namespace) -> dict[str, Any]:
        report = workspace.verdict(self.client, args.job, self.root)
        for check in report["checks"]:
            print(f"{'PASS' if check['ok'] else 'FAIL'} {check['name']}: {check['detail']}")
        print("VERIFIED" if report["ok"] else "NOT VERIFIED")
        return report

    def _current_notebook(self) -> Path:
        # Jupyter tells the kernel its notebook: ipykernel sets __session__ from the server.
        session = self.shell.user_ns.get("__session__") if self.shell else None
        if isinstance(session, str) and session.endswith(".ipynb"):
            path = Path(session)
            return path if path.is_absolute() else self.root / path
        raise workspace.LabError("cannot tell which notebook this is: %veil submit PATH")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%veil", exit_on_error=True)
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="submit a notebook or script")
    submit.add_argument("path", nargs="?")
    submit.add_argument("--input", "-i", action="append")
    submit.add_argument("--output", "-o", action="append")
    sub.add_parser("jobs", help="your jobs")
    wait = sub.add_parser("wait", help="wait until a job needs you or is done")
    wait.add_argument("job")
    wait.add_argument("--timeout", type=float, default=600.0)
    download = sub.add_parser("download", help="outputs, manifest and token")
    download.add_argument("job")
    download.add_argument("--to")
    verify = sub.add_parser("verify", help="verify the downloaded results")
    verify.add_argument("job")
    return parser


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext veil``: register ``%veil`` with the kernel's connection settings.

    In a notebook (Jupyter names it in ``JPY_SESSION_NAME``) with no ``$VEIL_OUTPUTS`` set,
    stage-1 `veil.publish` calls go to ``veil-results/stage1/<notebook>/``, so that submitting
    the notebook pins the queries of its last run.
    """
    session = os.environ.get("JPY_SESSION_NAME", "")
    if ENV_OUTPUTS not in os.environ and session.endswith(".ipynb"):
        folder = workspace.stage1_folder(Path(session))
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[ENV_OUTPUTS] = str(folder)
    client = Client(os.environ.get("VEIL_URL"), os.environ.get("VEIL_TOKEN"))
    magics = VeilMagics(ipython, client, Path.cwd())
    ipython.register_magic_function(magics, magic_kind="line", magic_name="veil")
