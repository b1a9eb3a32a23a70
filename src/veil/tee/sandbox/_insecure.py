"""The `insecure-dev` backend: the same runner as a plain subprocess with rlimits only.

No namespaces, no seccomp, no mount isolation: the workload can read anything the worker can
and reach the network. It exists for development machines without bubblewrap, only behind an
explicit flag, and every result it produces says ``insecure=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psutil

from . import _host
from ._types import SandboxRequest, SandboxResult


def _kill_tree(pid: int) -> None:
    """The kernel runs in its own session, so killing the runner's group is not enough."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()


class InsecureSubprocessBackend:
    """Runs the job without isolation; results are marked insecure."""

    name = "insecure-dev"

    def __init__(self, *, home: Path | None = None) -> None:
        self._home = home

    def run(self, request: SandboxRequest) -> SandboxResult:
        entry = _host.validate_request(request, home=self._home)
        limits = request.limits
        work = Path(tempfile.mkdtemp(prefix="veil-insecure-"))
        try:
            tmp = work / "tmp"
            tmp.mkdir()
            status_r, status_w = os.pipe()
            rlimits = {
                "cpu": limits.cpu_seconds,
                "fsize": limits.max_file_bytes,
                "as": limits.memory_bytes,
                "nofile": 1024,
            }
            argv = [sys.executable, "-s", "-P", str(_host.RUNNER_PATH)]
            argv += _host.runner_args(status_w, rlimits, limits.wall_seconds, str(entry.resolve()))
            env = _host.base_env(
                request,
                inputs=str(request.inputs_dir.resolve()),
                outputs=str(request.outputs_dir.resolve()),
                home=str(work),
            )
            env["TMPDIR"] = str(tmp)
            env["VEIL_INSECURE"] = "1"
            src = Path(__file__).resolve().parents[3]
            env["PYTHONPATH"] = str(src)
            raw = _host.supervise(
                argv,
                env=env,
                cwd=str(work),
                status_r=status_r,
                pass_fds=(status_w,),
                wall_seconds=limits.wall_seconds,
                watchdog=_host.output_size_watchdog(request.outputs_dir, limits.output_bytes),
                on_kill=_kill_tree,
            )
            verdict = _host.classify(
                raw, limits=limits, is_notebook=entry.suffix == ".ipynb", output_over=False,
                entry=entry, columns=request.public_names
            )
            return _host.settle(verdict, raw, request, written=request.outputs_dir,
                                staged=False, insecure=True, backend=self.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
