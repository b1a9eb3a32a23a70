"""Canonical JSON: the one byte encoding every digest and signature in Veil is computed over.

For the string/integer objects Veil hashes this matches RFC 8785 (JCS). NaN and infinities
are refused because they have no JSON form at all.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["CanonicalJSONError", "canonical_json", "sha256_digest"]


class CanonicalJSONError(ValueError):
    """The object cannot be encoded canonically (NaN, unsupported type, ...)."""


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as sorted-key, whitespace-free UTF-8 JSON."""
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise CanonicalJSONError(f"no canonical JSON form: {exc}") from None
    return text.encode()


def sha256_digest(obj: Any) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``obj``."""
    return "sha256:" + hashlib.sha256(canonical_json(obj)).hexdigest()
