"""Software-signed evidence for tests only: no TPM at all, marked contraindicated everywhere.

Like Trustee's ``sample`` TEE: it exercises the same event-log replay and report_data binding
as real evidence, but anyone with the host can forge it, so every verifier result derived from
it says ``contraindicated`` and no key-release policy can accept it.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veil.crypto.canonical import canonical_json
from veil.tee.attestation.errors import EvidenceError
from veil.tee.attestation.eventlog import EventLog
from veil.tee.attestation.evidence import LOCAL_INSECURE_TYPE, Evidence
from veil.tee.attestation.swtpm import key_id

__all__ = ["InsecureAttester"]


class InsecureAttester:
    backend = "local-insecure"

    def __init__(self, *, insecure: bool = False, key: Ed25519PrivateKey | None = None) -> None:
        if insecure is not True:
            raise EvidenceError("local-insecure evidence needs the explicit insecure=True flag")
        self._key = key or Ed25519PrivateKey.generate()
        self._register: bytes | None = None

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def measure(self, log: EventLog) -> None:
        if not log.sealed:
            raise EvidenceError("refusing to measure a launch log without its separator")
        self._register = log.replay()

    def evidence(self, log: EventLog, report_data: bytes) -> Evidence:
        if self._register is None:
            raise EvidenceError("measure the launch log before producing evidence")
        if len(report_data) != 32:
            raise EvidenceError("report_data must be 32 bytes")
        statement = canonical_json(
            {"register": self._register.hex(), "report_data": report_data.hex()}
        )
        return Evidence(
            type=LOCAL_INSECURE_TYPE,
            event_log=log.to_list(),
            report_data=report_data.hex(),
            quote=base64.b64encode(statement).decode(),
            signature=base64.b64encode(self._key.sign(statement)).decode(),
            signer=key_id(self.public_key),
        )
