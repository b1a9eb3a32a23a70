"""HPKE (RFC 9180) base mode for sealing a data key to a TEE's ephemeral X25519 key.

Uses `cryptography`'s built-in suite DHKEM(X25519, HKDF-SHA256)/HKDF-SHA256/AES-128-GCM.
The ``info`` string must bind the context (key id, job, nonce) so a sealed key cannot be
replayed into another job even by someone holding the same TEE key.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

__all__ = [
    "SUITE_NAME",
    "HpkeError",
    "decode_public_key",
    "encode_public_key",
    "generate_private_key",
    "open_sealed",
    "seal",
]

SUITE_NAME = "HPKE-Base-X25519-SHA256-AES128GCM"
_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_128_GCM)


class HpkeError(Exception):
    """A key is malformed or a sealed message does not open under this key and info."""


def generate_private_key() -> X25519PrivateKey:
    """A fresh ephemeral key; it should never leave the process that made it."""
    return X25519PrivateKey.generate()


def encode_public_key(key: X25519PublicKey) -> str:
    """Raw 32-byte public key, base64url without padding (the form bound into report_data)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_public_key(text: str) -> X25519PublicKey:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise HpkeError("public key is not base64url") from None
    if len(raw) != 32:
        raise HpkeError("an X25519 public key is 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def seal(public_key: X25519PublicKey, plaintext: bytes, info: bytes) -> bytes:
    """Encrypt to ``public_key``; returns ``enc || ciphertext``."""
    if not info:
        raise HpkeError("info must bind the sealing context")
    return _SUITE.encrypt(plaintext, public_key, info=info)


def open_sealed(private_key: X25519PrivateKey, sealed: bytes, info: bytes) -> bytes:
    try:
        return _SUITE.decrypt(sealed, private_key, info=info)
    except (InvalidTag, ValueError):
        raise HpkeError("sealed key does not open under this key and context") from None
