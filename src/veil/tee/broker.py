"""Key broker (RATS relying party, RCAR pattern): releases a dataset key only to attested code.

challenge() -> nonce; the workload binds the nonce and its ephemeral X25519 key into evidence,
the verifier turns that into an attestation result, and release() checks the result, the key
binding and the provider's policy before sealing the key with HPKE to the workload's key.
Deny by default; every decision goes to the audit sink. Storage is behind ``BrokerStore``
so the broker is DB-agnostic.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from veil.crypto import hpke
from veil.crypto.canonical import canonical_json
from veil.crypto.jose import TokenExpiredError, TokenNotYetValidError, UnknownKeyError
from veil.tee.attestation.errors import DenialReason, KeyReleaseDenied, VerificationError
from veil.tee.attestation.evidence import report_data
from veil.tee.verifier import STATUS_RANK, AttestationResult, verify_result

__all__ = [
    "LOCAL_BACKENDS",
    "BrokerStore",
    "DatasetPolicy",
    "InMemoryBrokerStore",
    "KeyBroker",
    "KeyPolicy",
    "SealedKey",
    "WorkloadKeyRequest",
    "open_released_key",
    "release_info",
]

LOCAL_BACKENDS = frozenset({"local-sandbox", "local-insecure"})
_NONDEBUG = frozenset({"disabled", "disabled-since-boot", "disabled-permanently",
                       "disabled-fully-and-permanently"})
_INFO_LABEL = b"veil-kbs-release-v1\x00"


class KeyPolicy(BaseModel):
    """A provider's release policy for one dataset key. Defaults are the strict ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_backends: frozenset[str] = frozenset()
    required_status: Literal["affirming", "warning"] = "affirming"
    require_hardware_backed: bool = True
    allow_debug: bool = False
    max_token_age_s: int = Field(default=300, gt=0, le=3600)


@dataclass(frozen=True)
class DatasetPolicy:
    provider: str
    policy: KeyPolicy


class BrokerStore(Protocol):
    """What the broker needs from storage; the server implements it over SQLAlchemy."""

    def put_nonce(self, nonce: str, expires_at: float) -> None: ...

    def consume_nonce(self, nonce: str, now: float) -> bool:
        """True exactly once per issued, unexpired nonce (atomically marks it used)."""
        ...

    def is_approved(self, *, provider: str, job: str, bundle_digest: str) -> bool:
        """Has ``provider`` approved ``bundle_digest`` for ``job``, and not revoked it?"""
        ...

    def dataset_policy(self, dataset_id: str) -> DatasetPolicy | None: ...

    def dataset_key(self, dataset_id: str) -> bytes:
        """The unwrapped data key of ``dataset_id``."""
        ...

    def record(self, event: str, **fields: Any) -> None:
        """Audit sink; fields never contain key material."""
        ...


@dataclass
class InMemoryBrokerStore:
    """Reference BrokerStore for tests and single-process use."""

    _nonces: dict[str, float] = field(default_factory=dict)
    _approvals: set[tuple[str, str, str]] = field(default_factory=set)
    _policies: dict[str, DatasetPolicy] = field(default_factory=dict)
    _keys: dict[str, bytes] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_dataset(self, dataset_id: str, provider: str, policy: KeyPolicy, key: bytes) -> None:
        self._policies[dataset_id] = DatasetPolicy(provider, policy)
        self._keys[dataset_id] = key

    def approve(self, *, provider: str, job: str, bundle_digest: str) -> None:
        self._approvals.add((provider, job, bundle_digest))

    def revoke(self, *, provider: str, job: str, bundle_digest: str) -> None:
        self._approvals.discard((provider, job, bundle_digest))

    def put_nonce(self, nonce: str, expires_at: float) -> None:
        with self._lock:
            self._nonces[nonce] = expires_at

    def consume_nonce(self, nonce: str, now: float) -> bool:
        with self._lock:
            expires = self._nonces.pop(nonce, None)
            for stale in [n for n, t in self._nonces.items() if t < now]:
                del self._nonces[stale]
        return expires is not None and now <= expires

    def is_approved(self, *, provider: str, job: str, bundle_digest: str) -> bool:
        return (provider, job, bundle_digest) in self._approvals

    def dataset_policy(self, dataset_id: str) -> DatasetPolicy | None:
        return self._policies.get(dataset_id)

    def dataset_key(self, dataset_id: str) -> bytes:
        return self._keys[dataset_id]

    def record(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise hpke.HpkeError("sealed key field is not base64url") from None


def release_info(key_id: str, bundle_digest: str, nonce: str) -> bytes:
    """HPKE info: binds the sealed key to one dataset, one approved bundle and one nonce."""
    return _INFO_LABEL + canonical_json(
        {"key_id": key_id, "job_digest": bundle_digest, "nonce": nonce}
    )


@dataclass(frozen=True)
class SealedKey:
    key_id: str
    enc_ct: str  # base64url of HPKE enc || ciphertext
    info: str  # base64url
    alg: str = hpke.SUITE_NAME

    def to_dict(self) -> dict[str, str]:
        return {"key_id": self.key_id, "alg": self.alg, "enc_ct": self.enc_ct, "info": self.info}


def open_released_key(
    sealed: SealedKey | Mapping[str, str],
    private_key: X25519PrivateKey,
    *,
    bundle_digest: str,
    nonce: str,
) -> bytes:
    """Workload side: open a released key after checking it was sealed for this exact context."""
    s = sealed if isinstance(sealed, SealedKey) else SealedKey(
        key_id=str(sealed["key_id"]), enc_ct=str(sealed["enc_ct"]), info=str(sealed["info"]),
        alg=str(sealed.get("alg", "")),
    )
    if s.alg != hpke.SUITE_NAME:
        raise hpke.HpkeError("unsupported key-release algorithm")
    expected = release_info(s.key_id, bundle_digest, nonce)
    if not hmac.compare_digest(_unb64u(s.info), expected):
        raise hpke.HpkeError("released key is bound to a different dataset, bundle or nonce")
    return hpke.open_sealed(private_key, _unb64u(s.enc_ct), expected)


class WorkloadKeyRequest:
    """Workload side of one key exchange: an ephemeral key that never leaves this object.

    ``report_data`` is what the launcher must quote; ``open`` accepts only a key sealed for
    this nonce and the expected bundle.
    """

    def __init__(self, *, nonce: str, job: str) -> None:
        self.nonce = nonce
        self.job = job
        self._key = hpke.generate_private_key()
        self.tee_public_key = hpke.encode_public_key(self._key.public_key())
        self.report_data = report_data(nonce, self.tee_public_key, job)

    def open(self, sealed: SealedKey | Mapping[str, str], *, bundle_digest: str) -> bytes:
        return open_released_key(sealed, self._key, bundle_digest=bundle_digest,
                                 nonce=self.nonce)


class KeyBroker:
    def __init__(
        self,
        store: BrokerStore,
        *,
        trusted_jwks: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
        issuer: str,
        nonce_ttl_s: int = 60,
        leeway_s: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < nonce_ttl_s <= 600:
            raise ValueError("nonce_ttl_s must be in (0, 600]")
        self._store = store
        self._jwks = trusted_jwks
        self._issuer = issuer
        self._nonce_ttl = nonce_ttl_s
        self._leeway = leeway_s
        self._clock = clock

    def challenge(self) -> str:
        """A fresh single-use nonce (32 random bytes, base64url) valid for ``nonce_ttl_s``."""
        nonce = secrets.token_urlsafe(32)
        now = self._clock()
        self._store.put_nonce(nonce, now + self._nonce_ttl)
        self._store.record("kbs.challenge", expires_at=int(now + self._nonce_ttl))
        return nonce

    def _deny(self, reason: DenialReason, message: str, **ctx: Any) -> KeyReleaseDenied:
        self._store.record("kbs.release.denied", reason=str(reason), **ctx)
        return KeyReleaseDenied(reason, message)

    def release(
        self, *, dataset_id: str, job: str, attestation_result: str, tee_public_key: str
    ) -> SealedKey:
        """Release ``dataset_id``'s key sealed to ``tee_public_key``, or raise KeyReleaseDenied."""
        ctx: dict[str, Any] = {"dataset": dataset_id, "job": job}
        now = self._clock()
        jwks = self._jwks() if callable(self._jwks) else self._jwks
        try:
            result = verify_result(
                attestation_result, jwks, issuer=self._issuer, now=now, leeway_s=self._leeway
            )
        except VerificationError as exc:
            cause = exc.__cause__
            reason = (
                DenialReason.TOKEN_EXPIRED if isinstance(cause, TokenExpiredError)
                else DenialReason.TOKEN_NOT_YET_VALID if isinstance(cause, TokenNotYetValidError)
                else DenialReason.UNKNOWN_SIGNER if isinstance(cause, UnknownKeyError)
                else DenialReason.TOKEN_INVALID
            )
            raise self._deny(reason, str(exc), **ctx) from None
        ctx.update(bundle_digest=result.bundle_digest, backend=result.backend,
                   status=result.status, token_jti=result.claims.get("jti"))
        try:
            self._check(result, dataset_id=dataset_id, job=job, tee_public_key=tee_public_key,
                        now=now, ctx=ctx)
            key = self._store.dataset_key(dataset_id)
            public = hpke.decode_public_key(tee_public_key)
        except KeyReleaseDenied:
            raise
        except (hpke.HpkeError, KeyError):
            raise self._deny(DenialReason.KEY_UNAVAILABLE,
                             "dataset key or TEE key unusable", **ctx) from None
        info = release_info(dataset_id, result.bundle_digest, result.nonce)
        sealed = SealedKey(key_id=dataset_id, enc_ct=_b64u(hpke.seal(public, key, info)),
                           info=_b64u(info))
        self._store.record("kbs.release.granted", **ctx)
        return sealed

    def _check(
        self, result: AttestationResult, *, dataset_id: str, job: str, tee_public_key: str,
        now: float, ctx: dict[str, Any],
    ) -> None:
        if result.phase != "launch":
            raise self._deny(DenialReason.WRONG_PHASE,
                             "only launch-phase results release keys", **ctx)
        # Burn the nonce before any further check: a result is good for one attempt only.
        if not self._store.consume_nonce(result.nonce, now):
            raise self._deny(DenialReason.NONCE_INVALID,
                             "nonce is unknown, expired or already used", **ctx)
        if result.job != job:
            raise self._deny(DenialReason.JOB_MISMATCH,
                             "attestation result is for another job", **ctx)
        expected_rd = report_data(result.nonce, tee_public_key, job).hex()
        if not (
            hmac.compare_digest(result.tee_public_key, tee_public_key)
            and hmac.compare_digest(result.report_data, expected_rd)
        ):
            raise self._deny(DenialReason.KEY_NOT_BOUND,
                             "report_data does not bind the presented key", **ctx)
        entry = self._store.dataset_policy(dataset_id)
        if entry is None:
            raise self._deny(DenialReason.UNKNOWN_DATASET,
                             "no release policy for this dataset", **ctx)
        policy = entry.policy
        if result.backend not in policy.allowed_backends:
            raise self._deny(DenialReason.BACKEND_NOT_ALLOWED,
                             "backend not allowed by policy", **ctx)
        if STATUS_RANK[result.status] < STATUS_RANK[policy.required_status] or (
            result.status == "contraindicated"
        ):
            raise self._deny(DenialReason.STATUS_INSUFFICIENT,
                             "attestation status below policy", **ctx)
        hardware = result.hardware_backed and result.backend not in LOCAL_BACKENDS and not (
            result.hwmodel.startswith("LOCAL_")
        )
        if policy.require_hardware_backed and not hardware:
            raise self._deny(DenialReason.HARDWARE_REQUIRED,
                             "policy demands hardware-backed evidence",
                             **ctx)
        if result.dbgstat not in _NONDEBUG and not policy.allow_debug:
            raise self._deny(DenialReason.DEBUG_FORBIDDEN,
                             "debug-mode evidence is forbidden", **ctx)
        if now - result.issued_at > policy.max_token_age_s:
            raise self._deny(DenialReason.TOKEN_TOO_OLD,
                             "attestation result is older than policy allows",
                             **ctx)
        if not self._store.is_approved(
            provider=entry.provider, job=job, bundle_digest=result.bundle_digest
        ):
            raise self._deny(DenialReason.BUNDLE_NOT_APPROVED,
                             "provider has not approved this bundle for this job", **ctx)
