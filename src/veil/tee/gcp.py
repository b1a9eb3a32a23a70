"""Google Confidential Space adapter: verify its attestation tokens against a provider policy.

Google's attestation service is the Verifier here; its OIDC token (RS256, keys from Google's
JWKS) is the evidence we appraise. Confidential Space has no raw report_data, so the workload
binds its key by passing ``binding_nonce(...)`` as one of the token's ``eat_nonce`` values.
The JWKS is passed in (fetched and cached by the caller), which keeps this offline-testable.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from veil.crypto.jose import JoseError, verify_jwt
from veil.tee.attestation.errors import VerificationError
from veil.tee.attestation.evidence import report_data

__all__ = [
    "GOOGLE_ISSUER",
    "ConfidentialSpaceClaims",
    "ConfidentialSpaceError",
    "ConfidentialSpacePolicy",
    "binding_nonce",
    "verify_confidential_space_token",
]

GOOGLE_ISSUER = "https://confidentialcomputing.googleapis.com"
_SUPPORT_ORDER = ("LATEST", "STABLE", "USABLE")  # LATEST ⊂ STABLE ⊂ USABLE


class ConfidentialSpaceError(VerificationError):
    """A Confidential Space token failed verification or the provider's policy."""


class ConfidentialSpacePolicy(BaseModel):
    """What a provider accepts from Confidential Space. Defaults are production-strict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audience: str = Field(min_length=1)
    allowed_image_digests: frozenset[str] = Field(min_length=1)
    allowed_hwmodels: frozenset[str] = frozenset({"GCP_AMD_SEV", "GCP_AMD_SEV_ES",
                                                  "GCP_INTEL_TDX"})
    required_support: Literal["LATEST", "STABLE", "USABLE"] = "STABLE"
    allow_debug: bool = False
    allow_overrides: bool = False
    issuer: str = GOOGLE_ISSUER


@dataclass(frozen=True)
class ConfidentialSpaceClaims:
    image_digest: str
    hwmodel: str
    dbgstat: str
    support_attributes: tuple[str, ...]
    nonces: tuple[str, ...]
    claims: dict[str, Any]


def binding_nonce(nonce: str, tee_public_key: str, job: str) -> str:
    """The eat_nonce value that binds a broker nonce and a TEE key (44 chars, within 8..88)."""
    return base64.b64encode(report_data(nonce, tee_public_key, job)).decode()


def _fail(message: str) -> ConfidentialSpaceError:
    return ConfidentialSpaceError(f"Confidential Space token rejected: {message}")


def verify_confidential_space_token(
    token: str,
    jwks: Mapping[str, Any],
    policy: ConfidentialSpacePolicy,
    *,
    expected_nonce: str,
    now: float | None = None,
    leeway_s: int = 30,
) -> ConfidentialSpaceClaims:
    try:
        claims = verify_jwt(
            token, jwks, algorithms=("RS256",), issuer=policy.issuer, audience=policy.audience,
            now=now, leeway_s=leeway_s, require=("iss", "aud", "iat", "exp", "eat_nonce"),
        )
    except JoseError as exc:
        raise _fail(str(exc)) from exc
    raw_nonces = claims["eat_nonce"]
    nonces = tuple(raw_nonces) if isinstance(raw_nonces, list) else (raw_nonces,)
    if expected_nonce not in nonces:
        raise _fail("eat_nonce does not contain the expected nonce")
    if claims.get("swname") != "CONFIDENTIAL_SPACE":
        raise _fail("swname is not CONFIDENTIAL_SPACE")
    hwmodel = claims.get("hwmodel")
    if hwmodel not in policy.allowed_hwmodels:
        raise _fail("hwmodel is not allowed by policy")
    dbgstat = claims.get("dbgstat")
    if dbgstat != "disabled-since-boot" and not policy.allow_debug:
        raise _fail("debug image (dbgstat is not disabled-since-boot)")
    submods = claims.get("submods")
    if not isinstance(submods, Mapping):
        raise _fail("token lacks submods")
    space = submods.get("confidential_space") or {}
    support = space.get("support_attributes") if isinstance(space, Mapping) else None
    support_t = tuple(support) if isinstance(support, list) else ()
    accepted = _SUPPORT_ORDER[: _SUPPORT_ORDER.index(policy.required_support) + 1]
    if not any(attr in accepted for attr in support_t):
        raise _fail(f"image is not supported at level {policy.required_support}")
    container = submods.get("container")
    if not isinstance(container, Mapping):
        raise _fail("token lacks submods.container")
    digest = container.get("image_digest")
    if digest not in policy.allowed_image_digests:
        raise _fail("container image digest is not approved")
    if not policy.allow_overrides and (
        container.get("env_override") or container.get("cmd_override")
    ):
        raise _fail("operator overrode the container's env or command")
    return ConfidentialSpaceClaims(
        image_digest=str(digest),
        hwmodel=str(hwmodel),
        dbgstat=str(dbgstat),
        support_attributes=support_t,
        nonces=tuple(str(n) for n in nonces),
        claims=claims,
    )
