"""Error types of the secure stage's attestation, verification and key release."""

from __future__ import annotations

from veil.tee.faults import PlatformFault

__all__ = [
    "AttestationError",
    "EventLogError",
    "EvidenceError",
    "KeyReleaseDenied",
    "SwtpmError",
    "SwtpmUnavailableError",
    "VerificationError",
]


class AttestationError(Exception):
    """Base class for everything in veil.tee's attestation path."""


class EventLogError(AttestationError):
    """An event log is malformed, out of order, or extended after its separator."""


class EvidenceError(AttestationError):
    """Evidence could not be produced or parsed."""


class SwtpmError(EvidenceError, PlatformFault):
    """The software TPM failed to start or to answer: a platform fault, so the job may re-run."""


class SwtpmUnavailableError(SwtpmError):
    """swtpm or the TPM2 software stack is not installed."""


class VerificationError(AttestationError):
    """Evidence or an attestation result does not verify; nothing derived from it is trusted."""


class KeyReleaseDenied(AttestationError):
    """The key broker refused to release a key. ``reason`` is a stable, audit-safe code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
