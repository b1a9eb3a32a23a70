"""The platform's attestation services: verifier keys, pinned AK, swtpm template, nonces.

One per process, opened at start (``AttestationServices.open``) and shared by every job's
launch. Broker nonces live in memory (``NonceBook``): a nonce is only meaningful to the one
worker process whose agent issued it, and a restarted worker re-runs the job with a fresh
agent, so a table would add writes without adding any guarantee.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from veil.crypto.keys import SigningKeyRing
from veil.tee.attestation import (
    AttestationError,
    SwtpmUnavailableError,
    create_swtpm_state,
    enroll_ak,
    has_swtpm_state,
    swtpm_missing,
)
from veil.tee.verifier import Verifier

__all__ = ["ISSUER", "SWTPM_RUN_DIR", "AttestationServices", "NonceBook"]

ISSUER = "veil-verifier"
SWTPM_RUN_DIR = "_tpm"  # under the run folder; job ids are hex, so no job dir collides
_KEY_FILE = "signing-keys.json"
_AK_FILE = "ak.pem"
_OPEN_ATTEMPTS = 3


class NonceBook:
    """Single-use broker nonces with expiry, shared by the agents of one process."""

    def __init__(self) -> None:
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def put(self, nonce: str, expires_at: float) -> None:
        with self._lock:
            self._nonces[nonce] = expires_at

    def consume(self, nonce: str, now: float) -> bool:
        with self._lock:
            expires = self._nonces.pop(nonce, None)
            for stale in [n for n, t in self._nonces.items() if t < now]:
                del self._nonces[stale]
        return expires is not None and now <= expires


@dataclass
class AttestationServices:
    """The platform's verifier keys, pinned AK and swtpm template (one per process)."""

    keyring: SigningKeyRing
    verifier: Verifier
    swtpm_template: Path | None
    swtpm_problem: str | None
    insecure_key: Ed25519PrivateKey | None
    nonces: NonceBook = field(default_factory=NonceBook)
    issuer: str = ISSUER
    swtpm_workdir: Path | None = None  # per-job swtpm state goes here (swept after a crash)

    def jwks(self) -> dict[str, Any]:
        return self.keyring.jwks()

    @classmethod
    def open(cls, home: Path, *, insecure_dev: bool = False, rotate_after_days: float = 30.0,
             run_dir: Path | None = None) -> AttestationServices:
        """Load (or create) the signing keys and the swtpm template under ``home``.

        Per-job swtpm state lives under ``run_dir`` (default: a temp dir per job).
        """
        keyring = _load_keyring(home / "keys" / "attest", rotate_after_days)
        template, problem, aks = None, swtpm_missing(), []
        if problem is None:
            template = home / "tpm"
            # A swtpm start can fail transiently (a loaded host); without a retry here the
            # server would stay without attestation for its whole life.
            for attempt in range(1, _OPEN_ATTEMPTS + 1):
                try:
                    aks.append(_pinned_ak(template))
                    problem = None
                    break
                except SwtpmUnavailableError as exc:
                    problem = f"software TPM unusable: {exc}"
                    break
                except AttestationError as exc:
                    problem = f"software TPM unusable: {exc}"
                    if template.is_dir() and not has_swtpm_state(template):
                        shutil.rmtree(template)  # half-made: manufacture it afresh next time
                    if attempt < _OPEN_ATTEMPTS:
                        time.sleep(0.2 * attempt)
            if problem is not None:
                template = None
        insecure_key = Ed25519PrivateKey.generate() if insecure_dev else None
        verifier = Verifier(
            keyring, issuer=ISSUER, trusted_aks=aks,
            insecure_keys=[insecure_key.public_key()] if insecure_key else (),
            allow_insecure=insecure_dev,
        )
        return cls(keyring, verifier, template, problem, insecure_key,
                   swtpm_workdir=run_dir / SWTPM_RUN_DIR if run_dir is not None else None)


def _load_keyring(directory: Path, rotate_after_days: float) -> SigningKeyRing:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    path = directory / _KEY_FILE
    if path.exists():
        ring = SigningKeyRing.load(directory)
        # save() rewrites the file on every rotation, so its mtime dates the newest key.
        if time.time() - path.stat().st_mtime > rotate_after_days * 86400:
            ring.rotate()
            ring.save(directory)
    else:
        ring = SigningKeyRing()
        ring.save(directory)
    return ring


def _pinned_ak(template: Path) -> Any:
    """The AK of swtpms started from ``template``; manufactured and enrolled once, then cached."""
    cache = template / _AK_FILE
    if not template.exists():
        template.mkdir(parents=True, mode=0o700)
        create_swtpm_state(template)
    if cache.exists():
        return load_pem_public_key(cache.read_bytes())
    from cryptography.hazmat.primitives import serialization

    key = enroll_ak(template)
    cache.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return key
