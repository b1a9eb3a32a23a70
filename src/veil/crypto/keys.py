"""Verifier signing keys: generation, rotation and the public JWKS.

Tokens outlive the key that signed them by at most their lifetime, so a rotated-out key
stays published (verify-only) until it is retired; only the newest key ever signs.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from veil.crypto.jose import sign_jwt

__all__ = ["KeyRingError", "SigningKeyRing"]


class KeyRingError(Exception):
    """The key ring is empty, corrupt or asked for a key it does not hold."""


@dataclass(frozen=True)
class _Entry:
    kid: str
    key: ec.EllipticCurvePrivateKey
    created: int


def _new_entry() -> _Entry:
    return _Entry(
        kid="veil-" + secrets.token_hex(8),
        key=ec.generate_private_key(ec.SECP256R1()),
        created=int(time.time()),
    )


class SigningKeyRing:
    """ES256 keys; the last one signs, the others (at most ``keep - 1``) only verify."""

    def __init__(self, *, keep: int = 3) -> None:
        if keep < 2:
            raise KeyRingError("keep must be >= 2 so tokens survive a rotation")
        self._keep = keep
        self._entries: list[_Entry] = [_new_entry()]

    @property
    def current_kid(self) -> str:
        return self._entries[-1].kid

    def rotate(self) -> str:
        """Start signing with a fresh key; drop the oldest beyond ``keep``. Returns the new kid."""
        self._entries.append(_new_entry())
        del self._entries[: -self._keep]
        return self.current_kid

    def retire(self, kid: str) -> None:
        """Stop publishing ``kid`` (e.g. after a compromise); the signing key cannot be retired."""
        if kid == self.current_kid:
            raise KeyRingError("cannot retire the current signing key; rotate first")
        before = len(self._entries)
        self._entries = [e for e in self._entries if e.kid != kid]
        if len(self._entries) == before:
            raise KeyRingError(f"no key {kid!r} in the ring")

    def sign(self, claims: dict[str, Any]) -> str:
        entry = self._entries[-1]
        return sign_jwt(claims, entry.key, entry.kid, "ES256")

    def jwks(self) -> dict[str, Any]:
        """The public key set to serve at ``/.well-known/jwks.json`` (no private parts)."""
        keys = []
        for entry in self._entries:
            jkey = ECKey.import_key(entry.key.public_key(), {"kid": entry.kid, "use": "sig"})
            public = dict(jkey.as_dict(private=False))
            public["alg"] = "ES256"
            keys.append(public)
        return {"keys": keys}

    def save(self, directory: Path) -> None:
        """Write the ring as one 0600 JSON file of PKCS#8 PEM keys."""
        directory.mkdir(parents=True, exist_ok=True)
        doc = {
            "keep": self._keep,
            "keys": [
                {
                    "kid": e.kid,
                    "created": e.created,
                    "pem": e.key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ).decode(),
                }
                for e in self._entries
            ],
        }
        path = directory / "signing-keys.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: Path) -> SigningKeyRing:
        path = directory / "signing-keys.json"
        try:
            doc = json.loads(path.read_text())
            entries = []
            for item in doc["keys"]:
                key = serialization.load_pem_private_key(item["pem"].encode(), password=None)
                if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
                    key.curve, ec.SECP256R1
                ):
                    raise KeyRingError("signing keys must be P-256")
                entries.append(_Entry(str(item["kid"]), key, int(item["created"])))
            keep = int(doc["keep"])
        except KeyRingError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = type(exc).__name__
            raise KeyRingError(f"cannot load signing keys from {path}: {reason}") from None
        if not entries:
            raise KeyRingError("key ring file holds no keys")
        ring = cls(keep=keep)
        ring._entries = entries
        return ring
