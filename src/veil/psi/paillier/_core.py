"""Paillier with g = n+1, DJN encryption and CRT decryption, over flat ciphertext buffers.

Encryption follows Damgard-Jurik-Nielsen (as in Intel IPCL, spec §1.2): with h = -x^2 mod n
and h_s = h^n mod n^2 published in the key, Enc(m) = (1 + n*m) * h_s^alpha mod n^2. The
exponent alpha is short: `2 * security bits` (224 bits for n = 2048, 256 bits for n = 3072),
which keeps the usual 2*lambda margin against generic (Pollard-lambda style) attacks on a
short exponent. h_s is fixed per key, so h_s^alpha is a fixed-base exponentiation evaluated
with a precomputed window table (8-bit windows: alpha_bits/8 multiplications per
encryption instead of a full exponentiation).

Re-randomisation (`rerandomize`, and the masker's step in `mask_and_pack` / `mask_rows`) hides
ciphertexts from the key's owner itself, so it must not use the owner's h_s: it multiplies by
r^n mod n^2 with r uniform in Z_n^* drawn by the re-randomising party (`_rerandomisers`).

Ciphertexts travel and rest as one `bytes` of fixed-width big-endian integers
(2 * n_bytes each); a `CiphertextVector` pairs that buffer with its public key.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
import secrets
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

import gmpy2
from gmpy2 import mpz

from veil.psi.paillier._errors import KeyMismatchError, MalformedPaillierData, PlaintextRangeError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    IntInput = Sequence[int] | npt.NDArray[np.uint64]
else:
    IntInput = Sequence[int]

SECURITY_BITS: dict[int, int] = {2048: 112, 3072: 128}
"""Supported modulus sizes and their NIST SP 800-57 security strength."""

_WINDOW = 8
_CRT_WINDOW = 12  # owner-side tables: 2 x 19 x 4096 half-size entries (~45 MB at n = 2048)
_MR_ROUNDS = 40
_PK_MAGIC = b"VPPK"
_CT_MAGIC = b"VPCV"
_FORMAT_VERSION = 1
_KEY_ID_BYTES = 8
_CT_HEADER = struct.Struct(">4sB8sI")  # magic, version, key id, count
_PK_HEADER = struct.Struct(">4sBH")  # magic, version, n_bits
_PARALLEL_MIN_ITEMS = 64

T = TypeVar("T")
U = TypeVar("U")


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _resolve_workers(workers: int | None, items: int) -> int:
    if workers is None:
        return 1 if items < _PARALLEL_MIN_ITEMS else min(_default_workers(), items)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return max(1, min(workers, items))


def _release_gil() -> None:
    # gmpy2 contexts are per thread; this lets mpz arithmetic in pool threads run in parallel.
    gmpy2.get_context().allow_release_gil = True


def _map_chunks(fn: Callable[[list[T]], list[U]], items: list[T], workers: int | None) -> list[U]:
    """fn over contiguous chunks of items, in order, on threads (gmpy2 releases the GIL)."""
    count = _resolve_workers(workers, len(items))
    if count <= 1:
        return fn(items)
    size = math.ceil(len(items) / (count * 2))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ThreadPoolExecutor(max_workers=count, initializer=_release_gil) as pool:
        parts = list(pool.map(fn, chunks))
    return [x for part in parts for x in part]


def _fixed_base_table(
    base: mpz, modulus: mpz, exponent_bits: int, window: int = _WINDOW
) -> list[list[mpz]]:
    """table[i][d] = base^(d * 2^(window*i)) mod modulus, for the fixed-base window method."""
    rows: list[list[mpz]] = []
    for _ in range(math.ceil(exponent_bits / window)):
        row = [mpz(1), base]
        for _ in range(2, 1 << window):
            row.append(row[-1] * base % modulus)
        rows.append(row)
        base = row[-1] * base % modulus
    return rows


def _fixed_base_pow(
    table: list[list[mpz]], exponent: int, modulus: mpz, window: int = _WINDOW
) -> mpz:
    """base^exponent mod modulus: one multiplication per non-zero window, no squarings."""
    r, i, mask = mpz(1), 0, (1 << window) - 1
    while exponent:
        digit = exponent & mask
        if digit:
            r = r * table[i][digit] % modulus
        exponent >>= window
        i += 1
    return r


def _to_int_list(values: IntInput) -> list[int]:
    tolist = getattr(values, "tolist", None)
    raw = tolist() if callable(tolist) else list(values)
    out: list[int] = []
    for v in raw:
        if isinstance(v, bool):
            raise PlaintextRangeError("plaintexts must be integers, got bool")
        try:
            out.append(operator.index(v))
        except TypeError:
            raise PlaintextRangeError(
                f"plaintexts must be integers, got {type(v).__name__}"
            ) from None
    return out


@dataclass(frozen=True)
class PaillierPublicKey:
    """n and the DJN fixed base h_s; g = n+1 is implicit."""

    n: mpz
    hs: mpz
    n_bits: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", mpz(self.n))
        object.__setattr__(self, "hs", mpz(self.hs))
        object.__setattr__(self, "n_bits", int(self.n.bit_length()))
        if self.n_bits not in SECURITY_BITS:
            raise MalformedPaillierData(
                f"modulus must have {sorted(SECURITY_BITS)} bits, got {self.n_bits}"
            )
        if self.n % 2 == 0 or gmpy2.is_square(self.n) or gmpy2.is_prime(self.n):
            raise MalformedPaillierData("modulus is not an RSA modulus")
        if not 1 < self.hs < self.n2 or gmpy2.gcd(self.hs, self.n) != 1:
            raise MalformedPaillierData("DJN base h_s is not a unit modulo n^2")
        if self.hs == self.n2 - 1 or gmpy2.powmod(self.hs, 2, self.n2) == 1:
            # +-1 and other square roots of 1 are never honest; refusing them is hygiene only.
            # Masking does not rely on h_s at all (see `_rerandomisers`).
            raise MalformedPaillierData("DJN base h_s has order at most 2 (degenerate key)")

    @cached_property
    def n2(self) -> mpz:
        return self.n * self.n

    @property
    def n_bytes(self) -> int:
        return (self.n_bits + 7) // 8

    @property
    def ciphertext_bytes(self) -> int:
        """Width of one ciphertext in a flat buffer (2 * n_bytes)."""
        return 2 * self.n_bytes

    @property
    def exponent_bits(self) -> int:
        """DJN short-exponent length: twice the key's security strength."""
        return 2 * SECURITY_BITS[self.n_bits]

    @cached_property
    def key_id(self) -> bytes:
        """8-byte fingerprint carried in serialised vectors to catch wrong-key use."""
        return hashlib.sha256(self.to_bytes()).digest()[:_KEY_ID_BYTES]

    @cached_property
    def _table(self) -> list[list[mpz]]:
        return _fixed_base_table(self.hs, self.n2, self.exponent_bits)

    def _randomiser(self) -> mpz:
        """A fresh h_s^alpha: the randomness of one encryption (an encryption of zero)."""
        return _fixed_base_pow(self._table, secrets.randbits(self.exponent_bits), self.n2)

    def _rerandomisers(self, count: int) -> list[mpz]:
        """`count` fresh r^n mod n^2, r uniform in Z_n^* drawn here: encryptions of zero that do
        not depend on anything the key's owner chose except n.

        Why not the DJN base: h_s is the owner's choice, and when the owner is the party we hide
        from (re-randomising ciphertexts we send back to it), h_s^alpha only hides what h_s lets
        it hide. h_s = n^2 - 1 gives h_s^alpha = +-1; an h_s of small order d (1 mod p^2, -1 mod
        q^2, or any order that divides lambda(n) — only the factorisation reveals it, so no
        validation can rule it out) gives d values, so the owner links c' to c by testing
        c'/(c * (1+n)^(m'-m)) in <h_s>, learns exactly which rows intersect and cancels the DP
        noise. A short exponent on a base of our own is not enough either: the owner may pick
        p-1, q-1 smooth and take discrete logs. With r uniform in Z_n^*, r^n is uniform over the
        n-th residues (for n = pq with gcd(n, phi(n)) = 1), so c' is a uniform encryption of its
        plaintext, independent of c. Cost: one full exponentiation mod n^2 per ciphertext (about
        60x an h_s^alpha table lookup; see bench/paillier.py). Assumes n is a valid RSA modulus
        (checked as far as is possible without a proof of well-formedness)."""
        n = self.n
        rs: list[mpz] = []
        while len(rs) < count:
            r = mpz(secrets.randbelow(int(n) - 1) + 1)
            if gmpy2.gcd(r, n) == 1:
                rs.append(r)
        return list(gmpy2.powmod_base_list(rs, n, self.n2)) if rs else []

    def _check_plain(self, values: list[int], what: str) -> None:
        n = self.n
        for v in values:
            if not 0 <= v < n:
                raise PlaintextRangeError(f"{what} must be in [0, n)")

    def encrypt_vector(self, values: IntInput, *, workers: int | None = None) -> CiphertextVector:
        """Encrypt integers in [0, n) with fresh DJN randomness each."""
        plain = _to_int_list(values)
        self._check_plain(plain, "plaintexts")
        n, n2 = self.n, self.n2

        def chunk(ms: list[int]) -> list[mpz]:
            return [(1 + n * m) * self._randomiser() % n2 for m in ms]

        _ = self._table
        return CiphertextVector._from_ints(self, _map_chunks(chunk, plain, workers))

    def to_bytes(self) -> bytes:
        """Magic, version, n_bits, then n and h_s big-endian at fixed widths."""
        return (
            _PK_HEADER.pack(_PK_MAGIC, _FORMAT_VERSION, self.n_bits)
            + self.n.to_bytes(self.n_bytes, "big")
            + self.hs.to_bytes(2 * self.n_bytes, "big")
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> PaillierPublicKey:
        """Parse and validate a serialised public key (raises `MalformedPaillierData`)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedPaillierData("public key must be bytes")
        data = bytes(data)
        if len(data) < _PK_HEADER.size:
            raise MalformedPaillierData("public key is truncated")
        magic, version, n_bits = _PK_HEADER.unpack_from(data)
        if magic != _PK_MAGIC or version != _FORMAT_VERSION:
            raise MalformedPaillierData("not a Veil Paillier public key (bad magic or version)")
        if n_bits not in SECURITY_BITS:
            raise MalformedPaillierData(f"unsupported modulus size {n_bits}")
        nb = (n_bits + 7) // 8
        if len(data) != _PK_HEADER.size + 3 * nb:
            raise MalformedPaillierData(
                f"public key must be {_PK_HEADER.size + 3 * nb} bytes, got {len(data)}"
            )
        off = _PK_HEADER.size
        n = mpz.from_bytes(data[off : off + nb], "big")
        hs = mpz.from_bytes(data[off + nb :], "big")
        if n.bit_length() != n_bits:
            raise MalformedPaillierData("modulus size does not match the header")
        return cls(n, hs)


@dataclass(frozen=True, repr=False)
class PaillierPrivateKey:
    """The factorisation of n with the CRT constants for decryption. Never serialised."""

    public_key: PaillierPublicKey
    p: mpz
    q: mpz

    def __post_init__(self) -> None:
        if self.p * self.q != self.public_key.n:
            raise ValueError("p * q does not equal the public modulus")

    def __repr__(self) -> str:
        return f"PaillierPrivateKey(n_bits={self.public_key.n_bits}, <secret>)"

    @cached_property
    def _crt(self) -> tuple[mpz, mpz, mpz, mpz, mpz]:
        p, q, n = self.p, self.q, self.public_key.n
        p2, q2 = p * p, q * q
        g = n + 1
        hp = gmpy2.invert((gmpy2.powmod(g, p - 1, p2) - 1) // p, p)
        hq = gmpy2.invert((gmpy2.powmod(g, q - 1, q2) - 1) // q, q)
        return p2, q2, hp, hq, gmpy2.invert(p, q)

    @cached_property
    def _crt_tables(self) -> tuple[list[list[mpz]], list[list[mpz]], mpz]:
        pk = self.public_key
        p2, q2 = self._crt[:2]
        bits, w = pk.exponent_bits, _CRT_WINDOW
        tp = _fixed_base_table(pk.hs % p2, p2, bits, w)
        tq = _fixed_base_table(pk.hs % q2, q2, bits, w)
        return tp, tq, gmpy2.invert(p2, q2)

    def encrypt_vector(self, values: IntInput) -> CiphertextVector:
        """The key owner's encryption: exactly the public key's DJN ciphertexts,
        (1 + n*m) * h_s^alpha mod n^2 with a fresh alpha each, but computed mod p^2 and q^2
        (half-size numbers, 12-bit windows) and joined by CRT: one thread does what two do on
        the public path. Single-threaded on purpose: on half-size numbers, releasing the GIL
        per operation costs more than a second thread gains (measured: 2 threads slower)."""
        pk = self.public_key
        plain = _to_int_list(values)
        pk._check_plain(plain, "plaintexts")
        n, bits = pk.n, pk.exponent_bits
        p2, q2 = self._crt[:2]
        tp, tq, p2_inv = self._crt_tables

        def chunk(ms: list[int]) -> list[mpz]:
            out = []
            for m in ms:
                alpha = secrets.randbits(bits)
                g = 1 + n * m
                a = g % p2 * _fixed_base_pow(tp, alpha, p2, _CRT_WINDOW) % p2
                b = g % q2 * _fixed_base_pow(tq, alpha, q2, _CRT_WINDOW) % q2
                out.append(a + p2 * ((b - a) * p2_inv % q2))
            return out

        return CiphertextVector._from_ints(pk, chunk(plain))

    @cached_property
    def _lambda_mu(self) -> tuple[mpz, mpz]:
        n = self.public_key.n
        lam = gmpy2.lcm(self.p - 1, self.q - 1)
        return lam, gmpy2.invert(lam, n)

    def decrypt_vector(
        self, ciphertexts: CiphertextVector, *, crt: bool = True, workers: int | None = None
    ) -> list[int]:
        """Plaintexts in [0, n). `crt=False` is the textbook path, kept for benchmarks."""
        if ciphertexts.public_key != self.public_key:
            raise KeyMismatchError("ciphertexts are not under this private key")
        cs = ciphertexts._ints()
        if crt:
            p, q = self.p, self.q
            p2, q2, hp, hq, p_inv = self._crt

            def chunk(items: list[mpz]) -> list[int]:
                xp = gmpy2.powmod_base_list([c % p2 for c in items], p - 1, p2)
                xq = gmpy2.powmod_base_list([c % q2 for c in items], q - 1, q2)
                out = []
                for a, b in zip(xp, xq, strict=True):
                    mp = (a - 1) // p * hp % p
                    mq = (b - 1) // q * hq % q
                    out.append(int(mp + p * ((mq - mp) * p_inv % q)))
                return out

        else:
            n, n2 = self.public_key.n, self.public_key.n2
            lam, mu = self._lambda_mu

            def chunk(items: list[mpz]) -> list[int]:
                xs = gmpy2.powmod_base_list(items, lam, n2)
                return [int((x - 1) // n * mu % n) for x in xs]

        return _map_chunks(chunk, cs, workers)

    def private_numbers(self) -> tuple[int, int]:
        """(p, q), e.g. to cross-check against another Paillier implementation."""
        return int(self.p), int(self.q)


def _random_prime(bits: int) -> mpz:
    """A uniformly drawn prime of exactly `bits` bits, top two bits set, = 3 mod 4."""
    top = mpz(3) << (bits - 2)
    while True:
        cand = mpz(secrets.randbits(bits)) | top | 3
        if gmpy2.is_prime(cand, _MR_ROUNDS):
            return cand


def generate_keypair(n_bits: int = 2048) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A fresh key pair: p = q = 3 mod 4, gcd(p-1, q-1) = 2, |p-q| > 2^(n_bits/2-100)."""
    if n_bits not in SECURITY_BITS:
        raise ValueError(f"n_bits must be one of {sorted(SECURITY_BITS)}, got {n_bits!r}")
    half = n_bits // 2
    while True:
        p, q = _random_prime(half), _random_prime(half)
        if abs(p - q).bit_length() <= half - 100 or gmpy2.gcd(p - 1, q - 1) != 2:
            continue
        n = p * q
        if n.bit_length() == n_bits:
            break
    while True:
        x = mpz(secrets.randbelow(int(n) - 2) + 2)
        if gmpy2.gcd(x, n) == 1:
            break
    h = (-x * x) % n
    hs = gmpy2.powmod(h, n, n * n)
    public = PaillierPublicKey(n, hs)
    return public, PaillierPrivateKey(public, p, q)


class CiphertextVector:
    """Ciphertexts under one public key, held as one flat big-endian buffer.

    Operations return new vectors. Results that a party sends to the key owner must be
    re-randomised (spec §12.1): `add`, `add_plain` and `mul_const` do so unless told not to.
    """

    __slots__ = ("_buffer", "_public_key")

    def __init__(
        self, public_key: PaillierPublicKey, buffer: bytes | bytearray | memoryview
    ) -> None:
        """Wrap a raw flat buffer (e.g. from a peer): length- and range-checked."""
        if not isinstance(buffer, bytes | bytearray | memoryview):
            raise MalformedPaillierData("ciphertext buffer must be bytes")
        width = public_key.ciphertext_bytes
        if len(buffer) % width:
            raise MalformedPaillierData(f"buffer length is not a multiple of {width} bytes")
        self._public_key = public_key
        self._buffer = bytes(buffer)
        n2 = public_key.n2
        for c in self._ints():
            if not 0 < c < n2:
                raise MalformedPaillierData("ciphertext out of range [1, n^2)")

    @classmethod
    def _trusted(cls, public_key: PaillierPublicKey, buffer: bytes) -> CiphertextVector:
        """A vector from our own arithmetic: skips the range check."""
        vec = cls.__new__(cls)
        vec._public_key = public_key
        vec._buffer = buffer
        return vec

    @classmethod
    def _from_ints(cls, public_key: PaillierPublicKey, values: Sequence[mpz]) -> CiphertextVector:
        width = public_key.ciphertext_bytes
        return cls._trusted(public_key, b"".join(mpz(v).to_bytes(width, "big") for v in values))

    @property
    def public_key(self) -> PaillierPublicKey:
        return self._public_key

    @property
    def buffer(self) -> bytes:
        """The raw ciphertexts: len(self) fixed-width big-endian integers."""
        return self._buffer

    def __len__(self) -> int:
        return len(self._buffer) // self._public_key.ciphertext_bytes

    def __repr__(self) -> str:
        return f"CiphertextVector(len={len(self)}, n_bits={self._public_key.n_bits})"

    def _ints(self) -> list[mpz]:
        w, view = self._public_key.ciphertext_bytes, memoryview(self._buffer)
        return [mpz.from_bytes(view[i : i + w], "big") for i in range(0, len(self._buffer), w)]

    def _same_key(self, other: CiphertextVector) -> None:
        if other._public_key != self._public_key:
            raise KeyMismatchError("ciphertext vectors are under different public keys")

    def select(self, indices: Sequence[int]) -> CiphertextVector:
        """Rows in the given order (filtering and sorting the matched rows); no re-encryption."""
        w, view, count = self._public_key.ciphertext_bytes, memoryview(self._buffer), len(self)
        parts = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < count:
                raise IndexError(f"row index {i!r} out of range for {count} ciphertexts")
            parts.append(view[i * w : (i + 1) * w])
        return CiphertextVector._trusted(self._public_key, b"".join(parts))

    @classmethod
    def concat(cls, vectors: Sequence[CiphertextVector]) -> CiphertextVector:
        if not vectors:
            raise ValueError("concat needs at least one vector")
        for v in vectors[1:]:
            vectors[0]._same_key(v)
        return cls._trusted(vectors[0]._public_key, b"".join(v._buffer for v in vectors))

    def rerandomize(self, *, workers: int | None = None) -> CiphertextVector:
        """Multiply each ciphertext by a fresh r^n (r ours): unlinkable even by the key's owner,
        whatever h_s it published (`PaillierPublicKey._rerandomisers`)."""
        pk = self._public_key
        n2 = pk.n2

        def chunk(cs: list[mpz]) -> list[mpz]:
            return [c * z % n2 for c, z in zip(cs, pk._rerandomisers(len(cs)), strict=True)]

        return CiphertextVector._from_ints(pk, _map_chunks(chunk, self._ints(), workers))

    def _finish(
        self, values: list[mpz], rerandomize: bool, workers: int | None
    ) -> CiphertextVector:
        out = CiphertextVector._from_ints(self._public_key, values)
        return out.rerandomize(workers=workers) if rerandomize else out

    def add(
        self, other: CiphertextVector, *, rerandomize: bool = True, workers: int | None = None
    ) -> CiphertextVector:
        """Elementwise Enc(a + b mod n)."""
        self._same_key(other)
        if len(other) != len(self):
            raise ValueError(f"length mismatch: {len(self)} vs {len(other)}")
        n2 = self._public_key.n2
        sums = [a * b % n2 for a, b in zip(self._ints(), other._ints(), strict=True)]
        return self._finish(sums, rerandomize, workers)

    def add_plain(
        self, values: IntInput, *, rerandomize: bool = True, workers: int | None = None
    ) -> CiphertextVector:
        """Elementwise Enc(a + m mod n) for plaintexts m in [0, n)."""
        plain = _to_int_list(values)
        if len(plain) != len(self):
            raise ValueError(f"length mismatch: {len(self)} ciphertexts vs {len(plain)} values")
        self._public_key._check_plain(plain, "plaintexts")
        n, n2 = self._public_key.n, self._public_key.n2
        out = [c * (1 + n * m) % n2 for c, m in zip(self._ints(), plain, strict=True)]
        return self._finish(out, rerandomize, workers)

    def mul_const(
        self, constants: int | IntInput, *, rerandomize: bool = True, workers: int | None = None
    ) -> CiphertextVector:
        """Elementwise Enc(a * k mod n) for constants k in [0, n) (one int is broadcast)."""
        if isinstance(constants, int) and not isinstance(constants, bool):
            ks = [constants] * len(self)
        else:
            ks = _to_int_list(constants)  # type: ignore[arg-type]
        if len(ks) != len(self):
            raise ValueError(f"length mismatch: {len(self)} ciphertexts vs {len(ks)} constants")
        self._public_key._check_plain(ks, "constants")
        n2 = self._public_key.n2

        def chunk(pairs: list[tuple[mpz, int]]) -> list[mpz]:
            return [gmpy2.powmod(c, k, n2) for c, k in pairs]

        out = _map_chunks(chunk, list(zip(self._ints(), ks, strict=True)), workers)
        return self._finish(out, rerandomize, workers)

    def to_bytes(self) -> bytes:
        """Header (magic, version, key id, count) followed by the flat buffer."""
        pk = self._public_key
        header = _CT_HEADER.pack(_CT_MAGIC, _FORMAT_VERSION, pk.key_id, len(self))
        return header + self._buffer

    @classmethod
    def from_bytes(cls, public_key: PaillierPublicKey, data: bytes) -> CiphertextVector:
        """Parse a serialised vector under `public_key`; every ciphertext must be in [1, n^2)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedPaillierData("ciphertext vector must be bytes")
        data = bytes(data)
        if len(data) < _CT_HEADER.size:
            raise MalformedPaillierData("ciphertext vector is truncated")
        magic, version, key_id, count = _CT_HEADER.unpack_from(data)
        if magic != _CT_MAGIC or version != _FORMAT_VERSION:
            raise MalformedPaillierData("not a Veil ciphertext vector (bad magic or version)")
        if key_id != public_key.key_id:
            raise KeyMismatchError("ciphertext vector was produced under a different public key")
        width = public_key.ciphertext_bytes
        if len(data) != _CT_HEADER.size + count * width:
            raise MalformedPaillierData(
                f"ciphertext vector declares {count} ciphertexts but has "
                f"{len(data) - _CT_HEADER.size} payload bytes"
            )
        return cls(public_key, data[_CT_HEADER.size :])
