"""Veil's side of the MPC engine: start this party's SPU process and talk to it over a pipe.

SPU 0.9.5 (Cheetah 2PC) cannot live in Veil's environment (it needs numpy < 2 and
jax <= 0.4.34), so each party runs `_spu_worker.py` with the interpreter of `.venv-mpc`
(created by scripts/setup.sh). The two workers link to each other over brpc; this module only
sends the job and this party's shares down stdin and reads typed events back from stdout
(protocol in `_spu_worker`'s docstring). The worker never sees the peer's data in the clear,
and this process never sees anything but the revealed noisy aggregates.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from veil.psi.errors import InputError, MpcError, ParameterMismatch

__all__ = ["EngineResult", "LinkTls", "WorkerJob", "default_mpc_python", "run_engine"]

WORKER = Path(__file__).with_name("_spu_worker.py")
PROTOCOL_VERSION = 1
_MAX_EVENT = 1 << 20


def default_mpc_python() -> Path:
    """`.venv-mpc/bin/python` of the checkout Veil runs from (where scripts/setup.sh puts it)."""
    return Path(__file__).resolve().parents[4] / ".venv-mpc" / "bin" / "python"


@dataclass(frozen=True)
class LinkTls:
    """This party's certificate and key and the peer's pinned certificate (from veil psi keygen)."""

    cert: Path
    key: Path
    peer_cert: Path


@dataclass(frozen=True)
class WorkerJob:
    """What one SPU process is told: its rank, both link addresses, the plan, the data shape."""

    rank: Literal[0, 1]
    addresses: tuple[str, str]
    plan: dict[str, Any]
    rows: int
    columns: tuple[str, ...]
    reveal_to: Literal["both", 0, 1]
    timeout_s: float = 600.0
    connect_timeout_s: float = 120.0
    tls: LinkTls | None = None
    """None: a plain TCP link (in-process tests only; the CLI always pins certificates)."""

    def to_line(self) -> bytes:
        tls = None if self.tls is None else {
            "cert": str(self.tls.cert), "key": str(self.tls.key),
            "peer_cert": str(self.tls.peer_cert)}
        return (json.dumps({
            "tls": tls,
            "version": PROTOCOL_VERSION, "rank": self.rank, "addresses": list(self.addresses),
            "plan": self.plan, "rows": self.rows, "columns": list(self.columns),
            "reveal_to": self.reveal_to, "timeout_s": self.timeout_s,
            "connect_timeout_s": self.connect_timeout_s,
        }, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class EngineResult:
    values: tuple[int, ...] | None
    """Revealed noisy aggregates in lattice units; None for a party that is not told."""
    stats: dict[str, float | int | None] = field(default_factory=dict)


def run_engine(python: Path, job: WorkerJob, shares: np.ndarray,
               on_phase: Callable[[str], None] | None = None) -> EngineResult:
    """Run this party's SPU worker to completion; MpcError (or ParameterMismatch) on failure."""
    if not python.exists():
        raise MpcError(
            f"the MPC engine's Python ({python}) is missing: run ./scripts/setup.sh (it creates "
            ".venv-mpc with spu 0.9.5) or point VEIL_MPC_PYTHON at an interpreter with spu")
    if shares.dtype != np.uint64 or shares.shape != (job.rows, len(job.columns)):
        raise InputError("shares must be a (rows, columns) uint64 matrix")
    if job.tls is not None:
        for what, path in (("certificate", job.tls.cert), ("key", job.tls.key),
                           ("peer certificate", job.tls.peer_cert)):
            if not path.is_file():
                raise InputError(f"the {what} file {path} does not exist")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            try:
                proc.stdin.write(job.to_line())
                for j in range(shares.shape[1]):
                    proc.stdin.write(np.ascontiguousarray(shares[:, j]).astype("<u8").tobytes())
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the worker stopped early; its event (or exit code) says why
            result: EngineResult | None = None
            for line in iter(lambda: proc.stdout.readline(_MAX_EVENT), b""):  # type: ignore[union-attr]
                event = _parse(line)
                kind = event.get("event")
                if kind == "phase" and on_phase is not None:
                    on_phase(str(event.get("name", "")))
                elif kind == "result":
                    result = _result(event)
                elif kind == "error":
                    message = str(event.get("message", "unknown error"))
                    if event.get("kind") == "mismatch":
                        raise ParameterMismatch(message)
                    raise MpcError(f"MPC engine: {message}")
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if result is None or code != 0:
            log.seek(0)
            tail = log.read()[-600:].decode(errors="replace").strip().splitlines()
            raise MpcError(f"the MPC engine stopped (exit code {code}) without a result"
                           + (f": {tail[-1]}" if tail else ""))
        return result


def _parse(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise MpcError("the MPC engine wrote a line that is not JSON") from None
    if not isinstance(event, dict):
        raise MpcError("the MPC engine wrote an event that is not an object")
    return event


def _result(event: dict[str, Any]) -> EngineResult:
    values = event.get("values")
    if values is not None and (not isinstance(values, list)
                               or not all(isinstance(v, int) for v in values)):
        raise MpcError("the MPC engine's result is malformed")
    stats = event.get("stats") or {}
    if not isinstance(stats, dict):
        raise MpcError("the MPC engine's stats are malformed")
    return EngineResult(tuple(values) if values is not None else None, stats)
