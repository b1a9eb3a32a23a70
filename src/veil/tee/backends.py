"""The secure stage as one pluggable object: where a workload runs and who vouches for it.

Flower's ``Strategy`` pattern: one abstract class with a documented lifecycle, chosen once per
platform (``secure_stage_for``) and asked everything a run needs — its ``name`` (what dataset
policies allow and submissions are checked against), whether its evidence is hardware-backed,
the sandbox that runs the workload, the attester that measures and quotes the launch, and how
the per-job key agent's socket reaches the workload. Nothing else decides by backend name.

Lifecycle of one run (driven by ``jobs.launcher.JobLaunch``)::

    attester = backend.open_attester(services)   # per job; closed after the final quote
    attester.measure(event_log)
    env, binds = backend.agent_wiring(agent_dir)   # merged into the SandboxRequest
    backend.sandbox.run(request)
    attester.evidence(...)                         # key releases, then the final quote
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Protocol

from veil.tee import sandbox as _sandbox
from veil.tee.attestation import (
    AttestationError,
    EventLog,
    InsecureAttester,
    SwtpmAttester,
)
from veil.tee.attestation.evidence import Evidence
from veil.tee.sandbox import (
    BubblewrapBackend,
    InsecureSubprocessBackend,
    SandboxBackend,
    SandboxUnavailable,
)
from veil.tee.services import AttestationServices

__all__ = ["AGENT_SANDBOX_DIR", "Attester", "LocalInsecure", "LocalSandbox",
           "SecureStageBackend", "secure_stage_for"]

AGENT_SANDBOX_DIR = "/run/veil"
AGENT_SOCKET = "agent.sock"


class Attester(Protocol):
    """What a run needs from its attester: extend the launch log, quote over report data."""

    def measure(self, log: EventLog) -> None: ...

    def evidence(self, log: EventLog, report_data: bytes) -> Evidence: ...

    def close(self) -> None: ...


class AttesterUnavailable(AttestationError):
    """This backend's attester cannot be had on this host; the job must not run."""


class SecureStageBackend(ABC):
    """One secure-stage backend; subclasses say how they isolate and how they attest."""

    name: str
    hardware_backed: bool
    insecure: bool
    sandbox: SandboxBackend

    @abstractmethod
    def open_attester(self, services: AttestationServices) -> Attester:
        """A started attester for one job, or AttesterUnavailable with a data-free reason."""

    @abstractmethod
    def agent_wiring(self, agent_dir: Path) -> tuple[dict[str, str], list[tuple[Path, str]]]:
        """Env and rw binds that put the key agent's socket in ``agent_dir`` into the run."""


class LocalSandbox(SecureStageBackend):
    """bubblewrap isolation, a per-job software TPM: real isolation, software evidence."""

    name = "local-sandbox"
    hardware_backed = False
    insecure = False

    def __init__(self, sandbox: BubblewrapBackend) -> None:
        self.sandbox = sandbox

    def open_attester(self, services: AttestationServices) -> Attester:
        if services.swtpm_template is None:
            raise AttesterUnavailable(f"attestation unavailable: {services.swtpm_problem}")
        attester = SwtpmAttester(services.swtpm_template, workdir_parent=services.swtpm_workdir)
        return attester.__enter__()

    def agent_wiring(self, agent_dir: Path) -> tuple[dict[str, str], list[tuple[Path, str]]]:
        return ({"VEIL_KEY_AGENT": f"{AGENT_SANDBOX_DIR}/{AGENT_SOCKET}"},
                [(agent_dir, AGENT_SANDBOX_DIR)])


class _NoClose:
    """The insecure attester holds no process; closing it is a no-op."""

    def __init__(self, attester: InsecureAttester) -> None:
        self._attester = attester

    def measure(self, log: EventLog) -> None:
        self._attester.measure(log)

    def evidence(self, log: EventLog, report_data: bytes) -> Evidence:
        return self._attester.evidence(log, report_data)

    def close(self) -> None:
        return None


class LocalInsecure(SecureStageBackend):
    """An unisolated subprocess with software-signed evidence: development only, marked so."""

    name = "local-insecure"
    hardware_backed = False
    insecure = True

    def __init__(self, sandbox: InsecureSubprocessBackend) -> None:
        self.sandbox = sandbox

    def open_attester(self, services: AttestationServices) -> Attester:
        if services.insecure_key is None:
            raise AttesterUnavailable("insecure evidence needs the explicit insecure-dev flag")
        return _NoClose(InsecureAttester(insecure=True, key=services.insecure_key))

    def agent_wiring(self, agent_dir: Path) -> tuple[dict[str, str], list[tuple[Path, str]]]:
        return {"VEIL_KEY_AGENT": str(agent_dir / AGENT_SOCKET)}, []


def secure_stage_for(*, insecure_dev: bool = False, scratch_dir: Path | None = None,
                     home: Path | None = None) -> SecureStageBackend:
    """The platform's backend: the local sandbox, or — only with the explicit insecure-dev flag
    and no bubblewrap on the host — the insecure one. Fails closed otherwise. ``home`` is the
    server's state folder, which no run may see."""
    if _sandbox.find_bwrap() is not None:  # looked up on the module: one place to stub it
        return LocalSandbox(BubblewrapBackend(scratch_dir=scratch_dir, home=home))
    if insecure_dev:
        return LocalInsecure(InsecureSubprocessBackend(home=home))
    raise SandboxUnavailable(_sandbox.BWRAP_MISSING)
