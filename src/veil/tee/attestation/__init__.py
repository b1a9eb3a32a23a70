"""Attestation for the secure stage: launcher event log, measurement and evidence producers.

Verification lives in ``veil.tee.verifier``, key release in ``veil.tee.broker`` and the
Google Confidential Space adapter in ``veil.tee.gcp``.
"""

from veil.tee.attestation.errors import (
    AttestationError,
    DenialReason,
    EventLogError,
    EvidenceError,
    KeyReleaseDenied,
    SwtpmError,
    SwtpmUnavailableError,
    VerificationError,
)
from veil.tee.attestation.eventlog import (
    MEASUREMENT_PCR,
    Event,
    EventLog,
    LaunchMeasurement,
    measure_launch,
)
from veil.tee.attestation.evidence import (
    LOCAL_INSECURE_TYPE,
    LOCAL_SWTPM_TYPE,
    Evidence,
    output_manifest_nonce,
    report_data,
)
from veil.tee.attestation.insecure import InsecureAttester
from veil.tee.attestation.swtpm import (
    SwtpmAttester,
    create_swtpm_state,
    enroll_ak,
    has_swtpm_state,
    key_id,
    swtpm_missing,
)

__all__ = [
    "LOCAL_INSECURE_TYPE",
    "LOCAL_SWTPM_TYPE",
    "MEASUREMENT_PCR",
    "AttestationError",
    "DenialReason",
    "Event",
    "EventLog",
    "EventLogError",
    "Evidence",
    "EvidenceError",
    "InsecureAttester",
    "KeyReleaseDenied",
    "LaunchMeasurement",
    "SwtpmAttester",
    "SwtpmError",
    "SwtpmUnavailableError",
    "VerificationError",
    "create_swtpm_state",
    "enroll_ak",
    "has_swtpm_state",
    "key_id",
    "measure_launch",
    "output_manifest_nonce",
    "report_data",
    "swtpm_missing",
]
