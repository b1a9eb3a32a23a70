"""Phase E adapter between the session's flat wire buffers and `veil.psi.paillier`.

Layout on the wire: feature-major. The owner sends, for each of its features, one ciphertext per
padded row. The masker selects the intersection rows (sorted by match value) per feature and
calls `mask_and_pack`, which packs ~19 rows into one ciphertext, adds per-slot masks and
re-randomises (spec §12.1); the owner decrypts one ciphertext per ~19 rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veil.psi.messages import Buffer
from veil.psi.paillier import (
    SECURITY_BITS,
    CiphertextVector,
    PackingLayout,
    PaillierPrivateKey,
    PaillierPublicKey,
    encrypt_payload,
    generate_keypair,
    mask_and_pack,
    unpack_and_decrypt,
)

PublicKey = PaillierPublicKey
_CHUNK = 1 << 15  # rows per Paillier batch (bounds memory of integer lists)
ALLOWED_BITS = tuple(sorted(SECURITY_BITS))


@dataclass(frozen=True)
class PayloadParams:
    bits: int
    packing: bool
    sigma: int

    @property
    def slots(self) -> int:
        return (self.bits - 1) // (64 + self.sigma + 1) if self.packing else 1


@dataclass(frozen=True)
class Keys:
    public: PaillierPublicKey
    private: PaillierPrivateKey

    def public_bytes(self) -> bytes:
        return self.public.to_bytes()


def generate_keys(bits: int) -> Keys:
    pk, sk = generate_keypair(bits)
    return Keys(pk, sk)


def load_public(data: Buffer, bits: int) -> PaillierPublicKey:
    pk = PaillierPublicKey.from_bytes(bytes(data))
    if pk.n_bits != bits:
        raise ValueError("public key size differs from the announced size")
    return pk


def ciphertext_bytes(params: PayloadParams) -> int:
    return 2 * ((params.bits + 7) // 8)


def ciphertext_columns(features: int, params: PayloadParams) -> int:
    return features


def masked_count(rows: int, features: int, params: PayloadParams) -> int:
    """Ciphertexts the owner gets back for `rows` intersection rows and `features` columns."""
    return features * -(-rows // params.slots)


def encrypt_features(pk: PaillierPublicKey, features: np.ndarray, params: PayloadParams) -> bytes:
    """Feature-major flat buffer: all rows of feature 0, then feature 1, ... (chunked to bound
    the memory of intermediate integer lists)."""
    parts: list[bytes] = []
    for j in range(features.shape[1]):
        for start in range(0, features.shape[0], _CHUNK):
            parts.append(encrypt_payload(pk, features[start : start + _CHUNK, j]).buffer)
    return b"".join(parts)


def mask(
    pk: PaillierPublicKey, data: Buffer, rows: int, features: int, hits: np.ndarray,
    params: PayloadParams,
) -> tuple[bytes, np.ndarray]:
    """Mask the peer's ciphertexts at rows `hits` (in that order); returns (wire bytes, shares)."""
    ct = ciphertext_bytes(params)
    table = np.frombuffer(data, dtype=np.uint8).reshape(features, rows, ct)
    step = params.slots * (_CHUNK // params.slots or 1)  # whole packing groups per chunk
    out: list[bytes] = []
    shares = np.zeros((len(hits), features), dtype=np.uint64)
    for j in range(features):
        for start in range(0, len(hits), step):
            chosen = table[j, hits[start : start + step]].tobytes()
            packed, mine = mask_and_pack(pk, CiphertextVector(pk, chosen),
                                         statistical_bits=params.sigma, packing=params.packing)
            out.append(packed.buffer)
            shares[start : start + step, j] = mine
    return b"".join(out), shares


def unmask(keys: Keys, data: Buffer, rows: int, features: int, params: PayloadParams) -> np.ndarray:
    """Decrypt the returned packed ciphertexts into the owner's shares (rows x features)."""
    layout = PackingLayout.for_key(keys.public, params.sigma, packing=params.packing)
    ct = ciphertext_bytes(params)
    width = layout.packed_count(rows) * ct
    view = memoryview(data)
    step = params.slots * (_CHUNK // params.slots or 1)
    shares = np.zeros((rows, features), dtype=np.uint64)
    for j in range(features):
        for start in range(0, rows, step):
            count = min(step, rows - start)
            first = j * width + (start // params.slots) * ct
            chunk = view[first : first + layout.packed_count(count) * ct]
            packed = CiphertextVector(keys.public, chunk)
            shares[start : start + count, j] = unpack_and_decrypt(
                keys.private, packed, count, statistical_bits=params.sigma,
                packing=params.packing)
    return shares
