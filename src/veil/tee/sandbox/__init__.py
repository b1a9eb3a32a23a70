"""Local isolation for the secure stage: run one job (notebook or script) in a sandbox.

``backend_for("local-sandbox")`` gives the bubblewrap backend (refuses to exist without bwrap);
``backend_for(..., insecure_dev=True)`` may fall back to an unisolated subprocess whose results
are marked insecure. The in-sandbox side is ``runner.py`` (stdlib + nbclient only).
"""

from __future__ import annotations

from pathlib import Path

from ._bwrap import BWRAP_MISSING, BubblewrapBackend, find_bwrap, sweep_scratch
from ._insecure import InsecureSubprocessBackend
from ._types import (
    SandboxBackend,
    SandboxError,
    SandboxHostFault,
    SandboxLimits,
    SandboxRequest,
    SandboxResult,
    SandboxUnavailable,
)

__all__ = [
    "BWRAP_MISSING",
    "BubblewrapBackend",
    "InsecureSubprocessBackend",
    "SandboxBackend",
    "SandboxError",
    "SandboxHostFault",
    "SandboxLimits",
    "SandboxRequest",
    "SandboxResult",
    "SandboxUnavailable",
    "backend_for",
    "find_bwrap",
    "sweep_scratch",
]


def backend_for(name: str, *, insecure_dev: bool = False,
                scratch_dir: Path | None = None) -> SandboxBackend:
    """The backend called `name`; fails closed unless insecure development mode is explicit.

    "local-sandbox" without bwrap raises SandboxUnavailable, or, only with insecure_dev=True,
    returns the insecure-dev backend (whose results say insecure=True).
    """
    if name == InsecureSubprocessBackend.name:
        if not insecure_dev:
            raise SandboxUnavailable("the insecure-dev backend needs an explicit insecure_dev flag")
        return InsecureSubprocessBackend()
    if name != BubblewrapBackend.name:
        raise SandboxError(f"unknown sandbox backend {name!r}")
    if find_bwrap() is None:
        if insecure_dev:
            return InsecureSubprocessBackend()
        raise SandboxUnavailable(BWRAP_MISSING)
    return BubblewrapBackend(scratch_dir=scratch_dir)
