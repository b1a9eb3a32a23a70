"""Release gate: what may leave the secure stage, and on whose word."""

from veil.release.gate import (
    PENDING,
    REFUSED,
    REJECTED,
    RELEASED,
    TO_CHARGE,
    Decision,
    InputRules,
    evaluate,
)
from veil.release.manifest import ManifestError, OutputEntry, OutputManifest, read_manifest

__all__ = ["PENDING", "REFUSED", "REJECTED", "RELEASED", "TO_CHARGE", "Decision", "InputRules",
           "ManifestError", "OutputEntry", "OutputManifest", "evaluate", "read_manifest"]
