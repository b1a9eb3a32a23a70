"""Evidence as it crosses from the attester (sandbox launcher) to the verifier.

report_data is the freshness-and-key binding: SHA-256 of the canonical JSON of
``{nonce, tee_public_key, job}``. The final attestation reuses it with the output
manifest digest as the nonce and no key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veil.crypto.canonical import canonical_json
from veil.tee.attestation.errors import EvidenceError

__all__ = [
    "LOCAL_INSECURE_TYPE",
    "LOCAL_SWTPM_TYPE",
    "Evidence",
    "output_manifest_nonce",
    "report_data",
]

LOCAL_SWTPM_TYPE = "application/vnd.veil.local-swtpm-quote+json"
LOCAL_INSECURE_TYPE = "application/vnd.veil.local-insecure+json"
_TYPES = (LOCAL_SWTPM_TYPE, LOCAL_INSECURE_TYPE)


def report_data(nonce: str, tee_public_key: str, job: str) -> bytes:
    """The 32 bytes the hardware (or swtpm) signs as qualifying data."""
    for name, value in (("nonce", nonce), ("tee_public_key", tee_public_key), ("job", job)):
        if not isinstance(value, str):
            raise EvidenceError(f"{name} must be a string")
    if not nonce or not job:
        raise EvidenceError("nonce and job must not be empty")
    return hashlib.sha256(
        canonical_json({"nonce": nonce, "tee_public_key": tee_public_key, "job": job})
    ).digest()


def output_manifest_nonce(manifest: Mapping[str, Any]) -> str:
    """The final token's eat_nonce: ``"sha256:<hex>"`` of the canonical output manifest."""
    return "sha256:" + hashlib.sha256(canonical_json(dict(manifest))).hexdigest()


@dataclass(frozen=True)
class Evidence:
    """A signed statement over (measurement register, report_data) plus the event log."""

    type: str
    event_log: list[dict[str, Any]]
    report_data: str  # hex
    quote: str  # base64 of the signed structure (TPMS_ATTEST or software statement)
    signature: str  # base64 DER signature
    signer: str  # "sha256:<hex>" of the signing key's SubjectPublicKeyInfo DER

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "event_log": self.event_log,
            "report_data": self.report_data,
            "quote": self.quote,
            "signature": self.signature,
            "signer": self.signer,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Evidence:
        if not isinstance(data, Mapping):
            raise EvidenceError("evidence must be a JSON object")
        fields = ("type", "event_log", "report_data", "quote", "signature", "signer")
        extra = set(data) - set(fields)
        if extra:
            raise EvidenceError(f"evidence has unknown fields: {sorted(extra)}")
        for name in fields:
            if name not in data:
                raise EvidenceError(f"evidence lacks {name!r}")
        if data["type"] not in _TYPES:
            raise EvidenceError("unknown evidence type")
        if not isinstance(data["event_log"], list):
            raise EvidenceError("event_log must be a list")
        for name in fields[2:]:
            if not isinstance(data[name], str):
                raise EvidenceError(f"{name!r} must be a string")
        return cls(
            type=data["type"],
            event_log=list(data["event_log"]),
            report_data=data["report_data"],
            quote=data["quote"],
            signature=data["signature"],
            signer=data["signer"],
        )
