"""Exception types of the Paillier layer (all under `veil.psi.errors.PsiError`)."""

from __future__ import annotations

from veil.psi.errors import ProtocolError, PsiError


class PaillierError(PsiError):
    """Base class of every Paillier failure."""


class PlaintextRangeError(PaillierError, ValueError):
    """A plaintext or constant is outside the range the operation accepts."""


class KeyMismatchError(PaillierError):
    """Ciphertexts under one key were combined with, or decrypted by, another key."""


class MalformedPaillierData(PaillierError, ProtocolError):
    """Serialised key or ciphertexts are malformed (wrong length, header or range)."""
