"""Paillier encryption for DPCA-PSI's payload phase (DJN encryption, CRT decryption, packing).

Keys: `generate_keypair(2048 | 3072)`. Ciphertexts: `CiphertextVector`, one flat buffer of
fixed-width big-endian integers with homomorphic add / add-plain / multiply-by-constant and
re-randomisation. Payload phase: `encrypt_payload`, `mask_and_pack`, `unpack_and_decrypt`
(masker packs), or `mask_rows`, `pack_and_decrypt` (owner packs, faster).
"""

from __future__ import annotations

from veil.psi.paillier._core import (
    SECURITY_BITS,
    CiphertextVector,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_keypair,
)
from veil.psi.paillier._errors import (
    KeyMismatchError,
    MalformedPaillierData,
    PaillierError,
    PlaintextRangeError,
)
from veil.psi.paillier._payload import (
    DEFAULT_STATISTICAL_BITS,
    VALUE_BITS,
    PackingLayout,
    encrypt_payload,
    mask_and_pack,
    mask_rows,
    owner_slots,
    pack_and_decrypt,
    unpack_and_decrypt,
)

__all__ = [
    "DEFAULT_STATISTICAL_BITS",
    "SECURITY_BITS",
    "VALUE_BITS",
    "CiphertextVector",
    "KeyMismatchError",
    "MalformedPaillierData",
    "PackingLayout",
    "PaillierError",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "PlaintextRangeError",
    "encrypt_payload",
    "generate_keypair",
    "mask_and_pack",
    "mask_rows",
    "owner_slots",
    "pack_and_decrypt",
    "unpack_and_decrypt",
]
