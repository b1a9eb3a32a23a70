"""The RATS Verifier: appraises launcher evidence and issues EAR-shaped EAT JWTs (ES256).

Evidence is trusted only if it is signed by a pinned key (a swtpm AK, or, behind an explicit
flag, a test-only software key), binds the caller's nonce, key and job through report_data,
and its event log replays to the quoted measurement. Whatever the evidence, a local backend's
result says what it is: not hardware-backed, debug enabled, never ``affirming``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veil import __version__
from veil.crypto.jose import JoseError, verify_jwt
from veil.crypto.keys import SigningKeyRing
from veil.tee.attestation._tpm import TPM_ALG_SHA256, parse_quote
from veil.tee.attestation.errors import AttestationError, VerificationError
from veil.tee.attestation.eventlog import MEASUREMENT_PCR, EventLog, LaunchMeasurement
from veil.tee.attestation.evidence import (
    LOCAL_INSECURE_TYPE,
    LOCAL_SWTPM_TYPE,
    Evidence,
    output_manifest_nonce,
    report_data,
)
from veil.tee.attestation.swtpm import key_id

__all__ = [
    "EAT_PROFILE",
    "STATUS_RANK",
    "AttestationResult",
    "Status",
    "Verifier",
    "verify_result",
]

EAT_PROFILE = "tag:veil.dev,2026:attestation-result-v1"
_SWNAME = "veil-launcher"
_VERSION = __version__
Status = Literal["affirming", "warning", "contraindicated"]
STATUS_RANK: dict[str, int] = {"affirming": 2, "warning": 1, "contraindicated": 0, "none": 0}


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class _Appraisal:
    measurement: LaunchMeasurement
    register: bytes
    hwmodel: str
    backend: str
    status: Status
    signer: str
    evidence_sha256: str


class Verifier:
    """Appraisal policy for local evidence, plus the signing keys of the results it issues."""

    def __init__(
        self,
        keyring: SigningKeyRing,
        *,
        issuer: str,
        trusted_aks: Iterable[ec.EllipticCurvePublicKey] = (),
        insecure_keys: Iterable[Ed25519PublicKey] = (),
        allow_insecure: bool = False,
        token_ttl_s: int = 300,
        final_token_ttl_s: int = 30 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < token_ttl_s <= 600:
            raise AttestationError("token_ttl_s must be in (0, 600]")
        if insecure_keys and not allow_insecure:
            raise AttestationError("insecure keys given without allow_insecure=True")
        self._keyring = keyring
        self.issuer = issuer
        self._aks = {key_id(k): k for k in trusted_aks}
        self._insecure = {key_id(k): k for k in insecure_keys} if allow_insecure else {}
        self._ttl = token_ttl_s
        # A key-release result is spent within seconds; the token over a run's outputs is what
        # a consumer keeps and verifies offline later, so it lives longer.
        self._final_ttl = final_token_ttl_s
        self._clock = clock

    def jwks(self) -> dict[str, Any]:
        return self._keyring.jwks()

    # -- appraisal -------------------------------------------------------------------------

    def _appraise(self, evidence: Evidence | Mapping[str, Any], expected_rd: bytes) -> _Appraisal:
        ev = evidence if isinstance(evidence, Evidence) else Evidence.from_dict(evidence)
        try:
            log = EventLog.from_list(ev.event_log)
            measurement = log.measurement()
        except AttestationError as exc:
            raise VerificationError(f"event log rejected: {exc}") from None
        replayed = log.replay()
        if not hmac.compare_digest(ev.report_data, expected_rd.hex()):
            raise VerificationError("report_data does not bind this nonce, key and job")
        quote = _b64decode(ev.quote, "quote")
        signature = _b64decode(ev.signature, "signature")
        if ev.type == LOCAL_SWTPM_TYPE:
            ak = self._aks.get(ev.signer)
            if ak is None:
                raise VerificationError("quote is signed by an attestation key that is not pinned")
            try:
                ak.verify(signature, quote, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                raise VerificationError("quote signature does not verify") from None
            info = parse_quote(quote)
            if not hmac.compare_digest(info.extra_data, expected_rd):
                raise VerificationError("quote qualifying data does not bind this nonce and key")
            if info.pcr_selection != ((TPM_ALG_SHA256, (MEASUREMENT_PCR,)),):
                raise VerificationError("quote does not cover exactly the measurement PCR")
            if not hmac.compare_digest(info.pcr_digest, hashlib.sha256(replayed).digest()):
                raise VerificationError("quoted PCR does not match the replayed event log")
            hwmodel, backend = "LOCAL_SWTPM", "local-sandbox"
            status: Status = "warning"
        elif ev.type == LOCAL_INSECURE_TYPE:
            key = self._insecure.get(ev.signer)
            if key is None:
                raise VerificationError(
                    "insecure evidence is refused (verifier not in insecure mode or unknown key)"
                )
            try:
                key.verify(signature, quote)
            except InvalidSignature:
                raise VerificationError("insecure evidence signature does not verify") from None
            try:
                statement = json.loads(quote)
                register = bytes.fromhex(statement["register"])
                stated_rd = bytes.fromhex(statement["report_data"])
            except (ValueError, KeyError, TypeError):
                raise VerificationError("insecure evidence statement is malformed") from None
            if not hmac.compare_digest(stated_rd, expected_rd):
                raise VerificationError("signed report_data does not bind this nonce and key")
            if not hmac.compare_digest(register, replayed):
                raise VerificationError("signed register does not match the replayed event log")
            hwmodel, backend = "LOCAL_INSECURE", "local-insecure"
            status = "contraindicated"
        else:  # pragma: no cover - Evidence.from_dict refuses unknown types
            raise VerificationError("unknown evidence type")
        digest = hashlib.sha256(json.dumps(ev.to_dict(), sort_keys=True).encode()).hexdigest()
        return _Appraisal(
            measurement, replayed, hwmodel, backend, status, ev.signer, "sha256:" + digest
        )

    def _claims(
        self, a: _Appraisal, *, nonce: str, job: str, phase: str, tee_public_key: str,
        outputs: dict[str, Any],
    ) -> dict[str, Any]:
        now = int(self._clock())
        m = a.measurement
        contraindicated = a.status == "contraindicated"
        return {
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + (self._final_ttl if phase == "final" else self._ttl),
            "jti": secrets.token_urlsafe(16),
            "eat_profile": EAT_PROFILE,
            "eat_nonce": nonce,
            "hwmodel": a.hwmodel,
            "swname": _SWNAME,
            "swversion": [_VERSION],
            "dbgstat": "enabled",
            "ear.status": a.status,
            "ear.verifier-id": {"developer": "veil", "build": _VERSION},
            "ear.trustworthiness-vector": {
                "instance-identity": 97 if contraindicated else 32,
                "hardware": 97 if contraindicated else 32,
                "executables": 2,
                "configuration": 2,
                "sourced-data": 2,
            },
            "submods": {
                "bundle": {
                    "digest": m.bundle_digest,
                    "runtime": m.bundle.get("runtime", ""),
                    "entrypoint": m.bundle.get("entrypoint", ""),
                    "inputs": m.bundle.get("inputs", []),
                    "outputs": m.bundle.get("outputs", []),
                },
                "runtime": m.runtime,
                "inputs": {"datasets": m.inputs},
                "outputs": outputs,
            },
            "x-veil": {
                "phase": phase,
                "job": job,
                "backend": a.backend,
                "backend_config": m.backend,
                "hardware_backed": False,
                "insecure": contraindicated,
                "report_data": report_data(nonce, tee_public_key, job).hex(),
                "tee_public_key": tee_public_key,
                "measurement": {"pcr": MEASUREMENT_PCR, "value": a.register.hex()},
                "signer": a.signer,
                "evidence_sha256": a.evidence_sha256,
            },
        }

    def appraise(
        self,
        evidence: Evidence | Mapping[str, Any],
        *,
        nonce: str,
        tee_public_key: str,
        job: str,
    ) -> str:
        """Launch-phase result: binds the broker's nonce and the workload's ephemeral key."""
        if not tee_public_key:
            raise VerificationError("a launch attestation must bind a TEE public key")
        appraisal = self._appraise(evidence, report_data(nonce, tee_public_key, job))
        claims = self._claims(
            appraisal, nonce=nonce, job=job, phase="launch", tee_public_key=tee_public_key,
            outputs={},
        )
        return self._keyring.sign(claims)

    def appraise_final(
        self, evidence: Evidence | Mapping[str, Any], *, output_manifest: Mapping[str, Any],
        job: str,
    ) -> str:
        """Final result: eat_nonce is the SHA-256 of the canonical output manifest."""
        files = _check_manifest(output_manifest)
        nonce = output_manifest_nonce(output_manifest)
        appraisal = self._appraise(evidence, report_data(nonce, "", job))
        claims = self._claims(
            appraisal, nonce=nonce, job=job, phase="final", tee_public_key="",
            outputs={"manifest_digest": nonce, "files": files},
        )
        return self._keyring.sign(claims)


def _check_manifest(manifest: Mapping[str, Any]) -> list[dict[str, str]]:
    outputs = manifest.get("outputs") if isinstance(manifest, Mapping) else None
    if not isinstance(outputs, list) or set(manifest) != {"outputs"}:
        raise VerificationError("output manifest must be exactly {'outputs': [...]}")
    files = []
    for item in outputs:
        if not isinstance(item, Mapping) or not {"name", "sha256"} <= set(item):
            raise VerificationError("each output needs at least 'name' and 'sha256'")
        files.append({"name": str(item["name"]), "sha256": str(item["sha256"])})
    return files


# -- relying-party side ----------------------------------------------------------------------


@dataclass(frozen=True)
class AttestationResult:
    """The parts of a verified result that relying parties decide on."""

    claims: dict[str, Any]
    status: str
    nonce: str
    hwmodel: str
    dbgstat: str
    bundle_digest: str
    backend: str
    hardware_backed: bool
    phase: str
    job: str
    tee_public_key: str
    report_data: str
    issued_at: int
    expires_at: int


def _get(claims: Mapping[str, Any], *path: str) -> Any:
    node: Any = claims
    for name in path:
        if not isinstance(node, Mapping) or name not in node:
            raise VerificationError(f"attestation result lacks claim {'.'.join(path)!r}")
        node = node[name]
    return node


def verify_result(
    token: str,
    jwks: Mapping[str, Any],
    *,
    issuer: str | None,
    now: float | None = None,
    leeway_s: int = 30,
) -> AttestationResult:
    """Verify a Veil attestation result offline (signature, issuer, time) and parse its claims.

    ``issuer=None`` skips the issuer check only; the JWKS remains the trust anchor.
    """
    try:
        claims = verify_jwt(
            token, jwks, algorithms=("ES256",), issuer=issuer, now=now, leeway_s=leeway_s,
            require=("iss", "iat", "exp", "eat_nonce"),
        )
    except JoseError as exc:
        raise VerificationError(f"attestation result rejected: {exc}") from exc
    fields = {
        "status": _get(claims, "ear.status"),
        "nonce": _get(claims, "eat_nonce"),
        "hwmodel": _get(claims, "hwmodel"),
        "dbgstat": _get(claims, "dbgstat"),
        "bundle_digest": _get(claims, "submods", "bundle", "digest"),
        "backend": _get(claims, "x-veil", "backend"),
        "phase": _get(claims, "x-veil", "phase"),
        "job": _get(claims, "x-veil", "job"),
        "tee_public_key": _get(claims, "x-veil", "tee_public_key"),
        "report_data": _get(claims, "x-veil", "report_data"),
    }
    for name, value in fields.items():
        if not isinstance(value, str):
            raise VerificationError(f"attestation result claim {name!r} must be a string")
    hardware_backed = _get(claims, "x-veil", "hardware_backed")
    if not isinstance(hardware_backed, bool):
        raise VerificationError("x-veil.hardware_backed must be a boolean")
    if fields["status"] not in STATUS_RANK:
        raise VerificationError("unknown ear.status")
    return AttestationResult(
        claims=claims,
        hardware_backed=hardware_backed,
        issued_at=int(claims["iat"]),
        expires_at=int(claims["exp"]),
        **fields,
    )
