"""Public value types and errors of the sandbox backends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from veil.tee.faults import PlatformFault

_MiB = 1024 * 1024
_GiB = 1024 * _MiB


class SandboxError(Exception):
    """A job could not be run in a sandbox (bad request or broken host setup)."""


class SandboxUnavailable(SandboxError):
    """The requested isolation is not available on this host; nothing was run."""


class SandboxHostFault(SandboxError, PlatformFault):
    """The host could not set up or tear down a sandbox (mounts, cgroups, files); not the job's
    fault, so the worker may run the job again."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one job; every one of them is enforced, none is advisory."""

    cpu_seconds: int = 300
    memory_bytes: int = 4 * _GiB
    max_processes: int = 64
    max_file_bytes: int = 256 * _MiB
    wall_seconds: int = 600
    tmpfs_bytes: int = 256 * _MiB
    output_bytes: int = 512 * _MiB

    def __post_init__(self) -> None:
        for name in (
            "cpu_seconds",
            "memory_bytes",
            "max_processes",
            "max_file_bytes",
            "wall_seconds",
            "tmpfs_bytes",
            "output_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SandboxError(f"SandboxLimits.{name} must be a positive int")
        if self.max_processes < 8:
            raise SandboxError("SandboxLimits.max_processes must be >= 8 (python needs threads)")


@dataclass(frozen=True)
class SandboxRequest:
    """One job: a bundle folder with its entrypoint, the input folder and the output folder.

    `extra_ro_binds`/`extra_rw_binds` are (host path, sandbox path) pairs; sandbox paths must lie
    under /run or /mnt (e.g. a key-broker unix socket).
    """

    bundle_dir: Path
    entrypoint: str
    inputs_dir: Path
    outputs_dir: Path
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    env: Mapping[str, str] = field(default_factory=dict)
    extra_ro_binds: Sequence[tuple[Path, str]] = ()
    extra_rw_binds: Sequence[tuple[Path, str]] = ()
    # The inputs' schema columns: names a failure's diagnostic may quote (see diagnostics).
    public_names: frozenset[str] = frozenset()
    # What VEIL_STAGE says inside: "secure" for jobs, "preflight" for a run on stage-1 views.
    stage: str = "secure"


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one job. `reason` is short and data-free: safe to show and to log."""

    ok: bool
    reason: str | None
    error_type: str | None
    cell: int | None
    duration_s: float
    sandbox_start_s: float | None
    insecure: bool
    backend: str
    line: int | None = None  # public facts only: see veil.tee.sandbox.diagnostics
    message: str | None = None


@runtime_checkable
class SandboxBackend(Protocol):
    """What the worker calls: run one request to completion, never raise for workload faults."""

    name: str

    def run(self, request: SandboxRequest) -> SandboxResult: ...
