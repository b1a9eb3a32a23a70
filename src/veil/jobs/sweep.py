"""Clean what a crashed worker left behind, before this one starts.

A worker killed with SIGKILL mid-job cannot tidy up: the job itself is recovered from the
database (``Worker.recover_stale``), but its sandbox staging mount, cgroups, swtpm state and
key-agent socket dir stay on the host. Children die with their parent (swtpm via
PR_SET_PDEATHSIG, bwrap via --die-with-parent); this sweep removes the rest. Everything it
touches is named for the process that made it and is removed only once that process is gone,
so live workers sharing the state folder are never disturbed.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from veil.jobs.lifecycle import FINAL
from veil.store.db import Database
from veil.store.models import Job
from veil.tee.attestation.swtpm import sweep_swtpm_dirs
from veil.tee.sandbox import sweep_scratch
from veil.tee.services import SWTPM_RUN_DIR

__all__ = ["SANDBOX_RUN_DIR", "SweepReport", "sweep_leftovers"]

log = logging.getLogger("veil.sweep")

SANDBOX_RUN_DIR = "_sandbox"
_AGENT_PREFIX = "veil-ka-"  # JobLaunch's key-agent dirs, in the temp dir
_AGENT_SOCKET = "agent.sock"


@dataclass(frozen=True)
class SweepReport:
    sandbox: int  # staging dirs (and their mounts) plus cgroups
    swtpm: int
    agent_dirs: int
    job_dirs: int

    @property
    def total(self) -> int:
        return self.sandbox + self.swtpm + self.agent_dirs + self.job_dirs


def sweep_leftovers(run_dir: Path, db: Database) -> SweepReport:
    """Remove a crashed worker's leftovers under ``run_dir`` (and its dead key-agent dirs)."""
    report = SweepReport(
        sandbox=sweep_scratch(run_dir / SANDBOX_RUN_DIR),
        swtpm=sweep_swtpm_dirs(run_dir / SWTPM_RUN_DIR),
        agent_dirs=_sweep_agent_dirs(Path(tempfile.gettempdir())),
        job_dirs=_sweep_job_dirs(run_dir, db),
    )
    if report.total:
        log.warning("swept leftovers of a crashed worker: %s", report)
    return report


def _sweep_agent_dirs(tmp: Path) -> int:
    """Key-agent dirs whose socket nobody listens on any more (the agent's process died)."""
    swept = 0
    for entry in tmp.glob(_AGENT_PREFIX + "*"):
        sock_path = entry / _AGENT_SOCKET
        if entry.is_symlink() or not entry.is_dir() or not sock_path.is_socket():
            continue  # no socket yet: an agent may be starting; leave it
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(sock_path))
                continue  # a live agent
            except ConnectionRefusedError:
                pass
            except OSError:
                continue
        shutil.rmtree(entry, ignore_errors=True)
        swept += 1
    return swept


def _sweep_job_dirs(run_dir: Path, db: Database) -> int:
    """Work dirs (staged ciphertext, outputs) of jobs that are over and will never run again.

    A re-queued job's dir is left alone: its next run starts by clearing it, and another live
    worker may be claiming it right now.
    """
    if not run_dir.is_dir():
        return 0
    names = [e.name for e in run_dir.iterdir()
             if not e.name.startswith("_") and e.is_dir() and not e.is_symlink()]
    if not names:
        return 0
    with db.transaction() as session:
        over = set(session.execute(
            select(Job.id).where(Job.id.in_(names), Job.state.in_([s.value for s in FINAL]))
        ).scalars())
    for name in over:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    return len(over)
