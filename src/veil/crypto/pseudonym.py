"""Keyed tags of join keys: HMAC-SHA256 under the platform's collaboration key.

One collaboration key serves every dataset of the platform, so the same real key gets the same
tag in every provider's key index (``veil.catalog.joinkeys``): the server can count how many
keys two datasets share without keeping either's keys, while a tag means nothing to anyone
without the key. The key never leaves the server: it lives in the keyring next to the
providers' KEKs and is never put in a view, a log or an error.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, hmac

from veil.crypto.envelope import _SecretKey

__all__ = ["CollaborationKey"]

_DOMAIN = b"veil/join-key/v1/"


class CollaborationKey(_SecretKey):
    """The platform-wide secret behind join-key tags (32 bytes, redacted repr)."""

    @classmethod
    def generate(cls) -> CollaborationKey:
        return cls(os.urandom(32))

    @classmethod
    def from_bytes(cls, key: bytes) -> CollaborationKey:
        return cls(key)

    def tag(self, purpose: str, value: str) -> bytes:
        """HMAC-SHA256 of ``value``, domain-separated by ``purpose`` (index, pseudonym)."""
        if not purpose or "\x00" in purpose:
            raise ValueError("purpose must be a non-empty name without NUL")
        mac = hmac.HMAC(self.to_bytes(), hashes.SHA256())
        mac.update(_DOMAIN + purpose.encode() + b"\x00" + value.encode("utf-8"))
        return mac.finalize()
