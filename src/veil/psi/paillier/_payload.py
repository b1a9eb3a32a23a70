"""Phase E of DPCA-PSI: turn the other party's encrypted payload into additive shares mod 2^64.

owner:  `enc = encrypt_payload(sk, values)`                (values in [0, 2^64))
masker: `packed, my_shares = mask_and_pack(pk, enc.select(rows))`
owner:  `their_shares = unpack_and_decrypt(sk, packed, count)`
so that my_shares[i] + their_shares[i] = values[rows[i]] (mod 2^64).

The masker packs up to `slots` ciphertexts into one by Horner's rule under encryption
(C = (..(c_0 * 2^s + c_1) * 2^s + ...) in the plaintext, first value in the most significant
slot), adds one mask per slot, r_j uniform in [2^64, 2^(64+sigma)), and re-randomises with a
fresh r^n mod n^2, r uniform in Z_n^* drawn by the masker (never the owner's DJN base h_s, which
the owner could make degenerate: see `PaillierPublicKey._rerandomisers`). With slot width
s = 64 + sigma + 1, value + mask < 2^s, so slots never carry; each slot hides its value to
statistical distance 2^-sigma. The masker's share is -r_j mod 2^64; the owner's is the
decrypted slot mod 2^64. Re-randomisation is not optional: without it c' = c (mod n) and the
owner could link returned ciphertexts to its own rows, learning exactly which records
intersect (spec §12.1).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gmpy2
from gmpy2 import mpz

from veil.psi.paillier._core import (
    CiphertextVector,
    IntInput,
    PaillierPrivateKey,
    PaillierPublicKey,
    _map_chunks,
    _to_int_list,
)
from veil.psi.paillier._errors import (
    KeyMismatchError,
    MalformedPaillierData,
    PlaintextRangeError,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

VALUE_BITS = 64
DEFAULT_STATISTICAL_BITS = 40
_MIN_STATISTICAL_BITS, _MAX_STATISTICAL_BITS = 40, 80
_VALUE_MOD = 1 << VALUE_BITS


@dataclass(frozen=True)
class PackingLayout:
    """Slot geometry for one key size and statistical security parameter."""

    statistical_bits: int
    slot_bits: int
    slots: int
    """Values per packed ciphertext (19 for n = 2048, sigma = 40)."""

    @classmethod
    def for_key(
        cls,
        public_key: PaillierPublicKey,
        statistical_bits: int = DEFAULT_STATISTICAL_BITS,
        *,
        packing: bool = True,
    ) -> PackingLayout:
        """`packing=False` gives one value per ciphertext (same masks, same shares)."""
        if (
            isinstance(statistical_bits, bool)
            or not isinstance(statistical_bits, int)
            or not _MIN_STATISTICAL_BITS <= statistical_bits <= _MAX_STATISTICAL_BITS
        ):
            raise ValueError(
                f"statistical_bits must be an integer in "
                f"[{_MIN_STATISTICAL_BITS}, {_MAX_STATISTICAL_BITS}], got {statistical_bits!r}"
            )
        slot_bits = VALUE_BITS + statistical_bits + 1
        # the packed plaintext must stay below n >= 2^(n_bits-1)
        slots = (public_key.n_bits - 1) // slot_bits if packing else 1
        return cls(statistical_bits, slot_bits, slots)

    def packed_count(self, count: int) -> int:
        """Ciphertexts needed to carry `count` values."""
        return math.ceil(count / self.slots)


def _random_mask(statistical_bits: int) -> int:
    """r uniform in [2^64, 2^(64+sigma)): value + r fits its slot and hides the value."""
    low = 1 << VALUE_BITS
    return low + secrets.randbelow((1 << (VALUE_BITS + statistical_bits)) - low)


def _to_uint64_array(values: list[int]) -> npt.NDArray[np.uint64]:
    import numpy as np

    return np.array(values, dtype=np.uint64) if values else np.zeros(0, dtype=np.uint64)


def encrypt_payload(
    key: PaillierPublicKey | PaillierPrivateKey, values: IntInput, *, workers: int | None = None
) -> CiphertextVector:
    """Encrypt uint64 payload values; anything outside [0, 2^64) is refused (it would overflow
    a slot at packing time and corrupt the neighbouring value). The owner passes its private
    key: the same ciphertexts by CRT, on one thread, for about half the CPU time."""
    plain = _to_int_list(values)
    for v in plain:
        if not 0 <= v < _VALUE_MOD:
            raise PlaintextRangeError("payload values must be in [0, 2^64)")
    if isinstance(key, PaillierPrivateKey):
        return key.encrypt_vector(plain)
    return key.encrypt_vector(plain, workers=workers)


def mask_and_pack(
    public_key: PaillierPublicKey,
    ciphertexts: CiphertextVector,
    *,
    statistical_bits: int = DEFAULT_STATISTICAL_BITS,
    packing: bool = True,
    workers: int | None = None,
) -> tuple[CiphertextVector, npt.NDArray[np.uint64]]:
    """Masker side: (re-randomised packed ciphertexts, the masker's shares mod 2^64).

    `ciphertexts` are the other party's uint64 payload values under its key `public_key`,
    already selected and ordered. Masks come from `secrets`.
    """
    if ciphertexts.public_key != public_key:
        raise KeyMismatchError("ciphertexts are not under the given public key")
    layout = PackingLayout.for_key(public_key, statistical_bits, packing=packing)
    cs = ciphertexts._ints()
    groups = [cs[i : i + layout.slots] for i in range(0, len(cs), layout.slots)]
    n, n2, s = public_key.n, public_key.n2, layout.slot_bits
    shift = mpz(1) << s

    def pack(chunk: list[list[mpz]]) -> list[tuple[mpz, list[int]]]:
        out = []
        for group, fresh in zip(chunk, public_key._rerandomisers(len(chunk)), strict=True):
            packed = group[0]
            for c in group[1:]:
                packed = gmpy2.powmod(packed, shift, n2) * c % n2
            masks = [_random_mask(statistical_bits) for _ in group]
            total = mpz(0)
            for r in masks:
                total = (total << s) + r
            # + masks under encryption, then a fresh r^n of ours: c' is unlinkable to the inputs
            packed = packed * (1 + n * total) % n2 * fresh % n2
            out.append((packed, [int(-r % _VALUE_MOD) for r in masks]))
        return out

    results = _map_chunks(pack, groups, workers)
    packed_vec = CiphertextVector._from_ints(public_key, [c for c, _ in results])
    shares = [a for _, group_shares in results for a in group_shares]
    return packed_vec, _to_uint64_array(shares)


def unpack_and_decrypt(
    private_key: PaillierPrivateKey,
    packed: CiphertextVector,
    count: int,
    *,
    statistical_bits: int = DEFAULT_STATISTICAL_BITS,
    packing: bool = True,
    workers: int | None = None,
) -> npt.NDArray[np.uint64]:
    """Owner side: decrypt packed ciphertexts and return the owner's `count` shares mod 2^64."""
    if packed.public_key != private_key.public_key:
        raise KeyMismatchError("packed ciphertexts are not under this private key")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    layout = PackingLayout.for_key(private_key.public_key, statistical_bits, packing=packing)
    if len(packed) != layout.packed_count(count):
        raise MalformedPaillierData(
            f"{count} values need {layout.packed_count(count)} packed ciphertexts, "
            f"got {len(packed)}"
        )
    plains = private_key.decrypt_vector(packed, workers=workers)
    s, slot_mask = layout.slot_bits, (1 << layout.slot_bits) - 1
    shares: list[int] = []
    for g, value in enumerate(plains):
        size = min(layout.slots, count - g * layout.slots)
        if value >> (size * s):
            # an honest masker's plaintext fits its slots exactly; anything else is tampering
            raise MalformedPaillierData("packed plaintext overflows its slots")
        for j in range(size):
            shares.append((value >> (s * (size - 1 - j))) & slot_mask & (_VALUE_MOD - 1))
    return _to_uint64_array(shares)


# --- owner-side packing: the faster option ---------------------------------------------------
# Packing under the public key costs the masker slot_bits squarings mod n^2 per row. The owner
# can pack far more cheaply with its private key: mod p^2 only (half-size numbers), as long as
# the packed plaintext stays below p (9 slots of 105 bits for n = 2048), then decrypt with the
# p half of the CRT alone. The masker then masks and re-randomises every row (one ciphertext per
# row goes back, 19x the return traffic); what the owner learns is unchanged: value + mask per
# row, in the masker's order, unlinkable to the ciphertexts it sent.


def owner_slots(private_key: PaillierPrivateKey, statistical_bits: int) -> int:
    """Rows per owner-packed plaintext: it must stay below p."""
    layout = PackingLayout.for_key(private_key.public_key, statistical_bits, packing=False)
    return (int(private_key.p).bit_length() - 1) // layout.slot_bits


def mask_rows(
    public_key: PaillierPublicKey,
    ciphertexts: CiphertextVector,
    *,
    statistical_bits: int = DEFAULT_STATISTICAL_BITS,
    workers: int | None = None,
) -> tuple[CiphertextVector, npt.NDArray[np.uint64]]:
    """Masker side of owner-side packing: every row + r (r uniform in [2^64, 2^(64+sigma))),
    re-randomised; returns (one ciphertext per row, the masker's shares mod 2^64)."""
    if ciphertexts.public_key != public_key:
        raise KeyMismatchError("ciphertexts are not under the given public key")
    PackingLayout.for_key(public_key, statistical_bits, packing=False)  # validates sigma
    n, n2 = public_key.n, public_key.n2

    def mask(chunk: list[mpz]) -> list[tuple[mpz, int]]:
        out = []
        for c, fresh in zip(chunk, public_key._rerandomisers(len(chunk)), strict=True):
            r = _random_mask(statistical_bits)
            out.append((c * (1 + n * r) % n2 * fresh % n2, -r % _VALUE_MOD))
        return out

    results = _map_chunks(mask, ciphertexts._ints(), workers)
    masked = CiphertextVector._from_ints(public_key, [c for c, _ in results])
    return masked, _to_uint64_array([a for _, a in results])


def pack_and_decrypt(
    private_key: PaillierPrivateKey,
    ciphertexts: CiphertextVector,
    *,
    statistical_bits: int = DEFAULT_STATISTICAL_BITS,
    workers: int | None = None,
) -> npt.NDArray[np.uint64]:
    """Owner side: Horner-pack the masked rows mod p^2, decrypt mod p, return its shares."""
    if ciphertexts.public_key != private_key.public_key:
        raise KeyMismatchError("ciphertexts are not under this private key")
    slots = owner_slots(private_key, statistical_bits)
    s = PackingLayout.for_key(private_key.public_key, statistical_bits).slot_bits
    p = private_key.p
    p2, _, hp, _, _ = private_key._crt
    shift = mpz(1) << s
    cs = ciphertexts._ints()
    groups = [cs[i : i + slots] for i in range(0, len(cs), slots)]

    def unpack(chunk: list[list[mpz]]) -> list[int]:
        out: list[int] = []
        for group in chunk:
            acc = group[0] % p2
            for c in group[1:]:
                acc = gmpy2.powmod(acc, shift, p2) * (c % p2) % p2
            value = (gmpy2.powmod(acc, p - 1, p2) - 1) // p * hp % p
            if value >> (len(group) * s):
                # an honest masker's rows are each below 2^s; anything else is tampering
                raise MalformedPaillierData("packed plaintext overflows its slots")
            for j in range(len(group)):
                out.append(int(value >> (s * (len(group) - 1 - j))) & (_VALUE_MOD - 1))
        return out

    return _to_uint64_array(_map_chunks(unpack, groups, workers))
