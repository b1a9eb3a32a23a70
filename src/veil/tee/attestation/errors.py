"""Error types of the secure stage's attestation, verification and key release."""

from __future__ import annotations

from enum import StrEnum

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


class DenialReason(StrEnum):
    """Why a key was not released: stable, audit-safe codes (pyca's ``_Reasons`` pattern).

    A ``StrEnum``, so the code is what goes on the wire and into the audit log.
    """

    BAD_REQUEST = "bad_request"
    NOT_AN_INPUT = "not_an_input"
    EVIDENCE_REJECTED = "evidence_rejected"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    UNKNOWN_SIGNER = "unknown_signer"
    TOKEN_INVALID = "token_invalid"
    KEY_UNAVAILABLE = "key_unavailable"
    WRONG_PHASE = "wrong_phase"
    NONCE_INVALID = "nonce_invalid"
    JOB_MISMATCH = "job_mismatch"
    KEY_NOT_BOUND = "key_not_bound"
    UNKNOWN_DATASET = "unknown_dataset"
    BACKEND_NOT_ALLOWED = "backend_not_allowed"
    STATUS_INSUFFICIENT = "status_insufficient"
    HARDWARE_REQUIRED = "hardware_required"
    DEBUG_FORBIDDEN = "debug_forbidden"
    TOKEN_TOO_OLD = "token_too_old"
    BUNDLE_NOT_APPROVED = "bundle_not_approved"
    TOO_MANY_REQUESTS = "too_many_requests"
    ATTESTATION_FAILED = "attestation_failed"
    AGENT_ERROR = "agent_error"
    DENIED = "denied"  # a code this side does not know (from an older or newer peer)

    @classmethod
    def parse(cls, code: object) -> DenialReason:
        try:
            return cls(str(code))
        except ValueError:
            return cls.DENIED


class KeyReleaseDenied(AttestationError):
    """The key broker refused to release a key: a typed ``reason`` and a data-free message."""

    def __init__(self, reason: DenialReason | str, message: str) -> None:
        self.reason = DenialReason.parse(reason)
        self.message = message
        super().__init__(f"{self.reason}: {message}")
