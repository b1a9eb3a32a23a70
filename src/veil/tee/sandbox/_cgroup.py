"""Per-job cgroup (v1 memory + pids) for limits rlimits cannot express.

RLIMIT_NPROC is not enforced for processes whose real uid is host root (bwrap run as root maps
the sandbox uid to host uid 0), and RLIMIT_AS counts address space rather than memory, so when
cgroup v1 controllers are writable each job gets its own memory and pids cgroup. On cgroup v2
hosts or without privileges this returns None and the runner falls back to rlimits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from veil.tee.owned import owned_name, owner_gone

_ROOT = Path("/sys/fs/cgroup")
_PREFIX = "veil-sbx-"


def cgroup_version() -> int | None:
    """2 for a unified hierarchy, 1 for v1/hybrid with a memory controller, else None."""
    if (_ROOT / "cgroup.controllers").exists():
        return 2
    if (_ROOT / "memory").is_dir() and (_ROOT / "pids").is_dir():
        return 1
    return None


def _own_path(controller: str) -> str:
    """This process's cgroup path for a v1 controller (so job cgroups nest under ours)."""
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return "/"


@dataclass
class JobCgroup:
    memory: Path
    pids: Path

    @property
    def procs_files(self) -> list[Path]:
        return [self.memory / "cgroup.procs", self.pids / "cgroup.procs"]

    def memory_limit_hit(self) -> bool:
        text = _read(self.memory / "memory.oom_control")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
        return False

    def pids_limit_hit(self) -> bool:
        for line in _read(self.pids / "pids.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max" and value.strip().isdigit() and int(value) > 0:
                return True
        return False

    def pids_refused(self) -> int:
        """How many forks the pids limit has refused so far."""
        for line in _read(self.pids / "pids.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max" and value.strip().isdigit():
                return int(value)
        return 0

    def pids_current(self) -> int:
        value = _read(self.pids / "pids.current").strip()
        return int(value) if value.isdigit() else 0

    def fork_bomb_watchdog(self, limit: int, strikes: int = 5) -> Callable[[], str | None]:
        """A watchdog (polled every ~0.2 s) that stops a job sitting at its process limit.

        The pids limit only refuses forks; a workload that keeps retrying would spin at the
        limit until the wall clock. ``strikes`` consecutive polls at the limit with new refusals
        end it with the same reason a failed fork gives.
        """
        last, count = 0, 0

        def check() -> str | None:
            nonlocal last, count
            refused = self.pids_refused()
            count = count + 1 if refused > last and self.pids_current() >= limit - 1 else 0
            last = refused
            return "process limit" if count >= strikes else None

        return check

    def destroy(self) -> None:
        """Kill whatever is left in the cgroups, then remove them."""
        deadline = time.monotonic() + 5.0
        for path in (self.pids, self.memory):
            while path.exists():
                pids = [int(p) for p in _read(path / "cgroup.procs").split() if p.isdigit()]
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    path.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)


def create_job_cgroup(memory_bytes: int, max_processes: int) -> JobCgroup | None:
    """Create memory+pids cgroups for one job, or None if this host cannot (v2, no privilege)."""
    if cgroup_version() != 1:
        return None
    name = owned_name(_PREFIX)
    mem = _ROOT / "memory" / _own_path("memory").lstrip("/") / name
    pids = _ROOT / "pids" / _own_path("pids").lstrip("/") / name
    made: list[Path] = []
    try:
        for path in (mem, pids):
            path.mkdir()
            made.append(path)
        (mem / "memory.limit_in_bytes").write_text(str(memory_bytes))
        memsw = mem / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # no swapping around the limit
            memsw.write_text(str(memory_bytes))
        (pids / "pids.max").write_text(str(max_processes))
    except OSError:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
        return None
    return JobCgroup(memory=mem, pids=pids)


def sweep_stale_cgroups() -> int:
    """Kill and remove the job cgroups of worker processes that have exited (e.g. SIGKILL)."""
    if cgroup_version() != 1:
        return 0
    mem_root = _ROOT / "memory" / _own_path("memory").lstrip("/")
    pids_root = _ROOT / "pids" / _own_path("pids").lstrip("/")
    names = {p.name for root in (mem_root, pids_root) if root.is_dir()
             for p in root.glob(_PREFIX + "*") if owner_gone(p.name, _PREFIX)}
    for name in names:
        JobCgroup(memory=mem_root / name, pids=pids_root / name).destroy()
    return len(names)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
