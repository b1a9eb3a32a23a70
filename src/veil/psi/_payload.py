"""Phase E adapter between the session's flat wire buffers and `veil.psi.paillier`.

The owner streams its features, one ciphertext per padded row, in chunks of `CHUNK_ROWS` rows
(feature-major within a chunk), encrypting each chunk by CRT just before it is sent. The masker
keeps only the intersection rows, in output order (ascending match value), and returns them in
batches: by default (`packing="masker"`) `mask_and_pack` packs ~19 rows into one ciphertext, adds
per-slot masks and re-randomises (spec §12.1), and the owner decrypts one ciphertext per ~19 rows;
with `packing="owner"` every row comes back masked and re-randomised and the owner packs them
under its private key. Neither side ever holds a whole ciphertext column (512 MB per feature at
N = 10^6).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from veil.psi.messages import Buffer
from veil.psi.paillier import (
    SECURITY_BITS,
    CiphertextVector,
    PaillierPrivateKey,
    PaillierPublicKey,
    encrypt_payload,
    generate_keypair,
    mask_and_pack,
    mask_rows,
    pack_and_decrypt,
    unpack_and_decrypt,
)

PublicKey = PaillierPublicKey
CHUNK_ROWS = 1 << 15
"""Rows per streamed ciphertext frame and per Paillier batch (16 MiB per feature at n = 2048)."""
ALLOWED_BITS = tuple(sorted(SECURITY_BITS))


PACKING = ("masker", "owner", "none")
"""Who packs the masked rows: "masker" (baseline: under the public key, ~19 rows per returned
ciphertext), "owner" (faster: the masker returns every row masked and re-randomised, the owner
packs 9 per decryption under its private key), "none" (one decryption per row)."""


@dataclass(frozen=True)
class PayloadParams:
    bits: int
    packing: str
    sigma: int

    @property
    def slots(self) -> int:
        """Rows per returned ciphertext."""
        return (self.bits - 1) // (64 + self.sigma + 1) if self.packing == "masker" else 1


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


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def release_free_memory() -> None:
    """Hand freed memory back to the OS after each masking / decryption batch. Those run on pool
    threads, whose malloc arenas otherwise keep the freed pages of gmpy2's big-integer
    temporaries: at N = 10^6 the peak RSS was ~1.05 GB without this and ~0.62 GB with it.
    (Encryption runs on the main thread, whose arena glibc trims by itself.)"""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def chunk_count(rows: int, features: int) -> int:
    """Frames a party streams its `rows` x `features` ciphertexts in (0 when it has none)."""
    return -(-rows // CHUNK_ROWS) if features else 0


def chunk_bytes(rows: int, features: int, index: int, params: PayloadParams) -> int:
    """Size of chunk `index` of a party with `rows` padded rows and `features` columns."""
    if index >= chunk_count(rows, features):
        return 0
    return min(CHUNK_ROWS, rows - index * CHUNK_ROWS) * features * ciphertext_bytes(params)


def masked_count(rows: int, features: int, params: PayloadParams) -> int:
    """Ciphertexts the owner gets back for `rows` intersection rows and `features` columns."""
    return features * -(-rows // params.slots)


def encrypt_chunk(keys: Keys, features: np.ndarray, index: int, params: PayloadParams) -> bytes:
    """Chunk `index` of the owner's rows (already in its private order), feature-major:
    encrypted by CRT with the owner's private key, so only one chunk is ever held."""
    rows = features[index * CHUNK_ROWS : (index + 1) * CHUNK_ROWS]
    return b"".join(encrypt_payload(keys.private, rows[:, j]).buffer for j in range(rows.shape[1]))


class PeerCiphertexts:
    """The peer's streamed ciphertexts, of which only the matched rows are kept — already in
    output order (ascending match value) — so a masker holds |I|, not all, of the peer's rows."""

    def __init__(self, hits: np.ndarray, rows: int, features: int, params: PayloadParams):
        self.features, self.rows, self.count = features, rows, len(hits)
        self._ct = ciphertext_bytes(params)
        self._position = np.full(rows, -1, dtype=np.int64)
        self._position[hits] = np.arange(len(hits), dtype=np.int64)
        self.table = np.empty((features, len(hits), self._ct), dtype=np.uint8)

    def add(self, index: int, data: Buffer) -> None:
        start = index * CHUNK_ROWS
        size = min(CHUNK_ROWS, self.rows - start)
        chunk = np.frombuffer(data, dtype=np.uint8).reshape(self.features, size, self._ct)
        position = self._position[start : start + size]
        keep = position >= 0
        self.table[:, position[keep]] = chunk[:, keep]


def batch_rows(params: PayloadParams) -> int:
    """Output rows per `Masked` frame: whole packing groups, about `CHUNK_ROWS`."""
    return params.slots * (CHUNK_ROWS // params.slots or 1)


def mask(
    pk: PaillierPublicKey, peer: PeerCiphertexts, start: int, count: int, params: PayloadParams
) -> tuple[bytes, np.ndarray]:
    """Mask output rows [start, start + count) of the peer's kept ciphertexts; returns (wire
    bytes, feature-major, and the masker's shares, count x features)."""
    out: list[bytes] = []
    shares = np.zeros((count, peer.features), dtype=np.uint64)
    for j in range(peer.features):
        chosen = CiphertextVector(pk, peer.table[j, start : start + count].tobytes())
        if params.packing == "owner":
            back, mine = mask_rows(pk, chosen, statistical_bits=params.sigma)
        else:
            back, mine = mask_and_pack(pk, chosen, statistical_bits=params.sigma,
                                       packing=params.packing == "masker")
        out.append(back.buffer)
        shares[:, j] = mine
    release_free_memory()
    return b"".join(out), shares


def unmask(
    keys: Keys, data: Buffer, count: int, features: int, params: PayloadParams
) -> np.ndarray:
    """Decrypt one `Masked` frame (count rows, feature-major) into the owner's shares."""
    width = masked_count(count, 1, params) * ciphertext_bytes(params)
    view = memoryview(data)
    shares = np.zeros((count, features), dtype=np.uint64)
    for j in range(features):
        back = CiphertextVector(keys.public, view[j * width : (j + 1) * width])
        if params.packing == "owner":
            mine = pack_and_decrypt(keys.private, back, statistical_bits=params.sigma)
        else:
            mine = unpack_and_decrypt(keys.private, back, count, statistical_bits=params.sigma,
                                      packing=params.packing == "masker")
        shares[:, j] = mine
    release_free_memory()
    return shares
