"""Prime-order groups for commutative (ECDH-style) encryption, over flat element buffers.

Two groups: ristretto255 (default; libsodium through ctypes) and NIST P-256 with the reference
implementation's try-and-increment hash (spec §1.1), kept for cross-checking against the C++
reference. Elements live in flat `bytearray`s of `count * element_size` bytes, never in lists of
bytes objects; batch operations are spread over a thread pool because ctypes releases the GIL.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache

import gmpy2

from veil.psi import _sodium
from veil.psi.errors import GroupError

RandomBytes = Callable[[int], bytes]

_MIN_CHUNK = 512


@dataclass(frozen=True)
class Scalar:
    """A secret exponent of one group; the value never appears in repr or logs."""

    group: str
    value: int = field(repr=False)

    def __repr__(self) -> str:
        return f"Scalar(group={self.group!r}, value=<secret>)"


def worker_count() -> int:
    """Threads used for batch group operations ($VEIL_PSI_THREADS, default: all cores)."""
    env = os.environ.get("VEIL_PSI_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="veil-psi-ec")


def _parallel(count: int, work: Callable[[int, int], bool]) -> bool:
    """Run work(start, stop) over chunks of [0, count); True when every chunk succeeded."""
    workers = worker_count()
    if count <= _MIN_CHUNK or workers == 1:
        return work(0, count)
    chunk = max(_MIN_CHUNK, -(-count // (workers * 4)))
    pool = _pool(workers)
    futures = [pool.submit(work, s, min(s + chunk, count)) for s in range(0, count, chunk)]
    return all([f.result() for f in futures])


class Group(ABC):
    """A prime-order group with hash-to-group and scalar multiplication over flat buffers."""

    name: str
    element_size: int
    order: int

    def random_scalar(self, random_bytes: RandomBytes = os.urandom) -> Scalar:
        """A uniform non-zero scalar (64 random bytes reduced: bias below 2^-250)."""
        while True:
            value = int.from_bytes(random_bytes(64), "little") % self.order
            if value:
                return Scalar(self.name, value)

    def scalar_mul(self, a: Scalar, b: Scalar) -> Scalar:
        self._check(a)
        self._check(b)
        return Scalar(self.name, a.value * b.value % self.order)

    def scalar_invert(self, a: Scalar) -> Scalar:
        self._check(a)
        return Scalar(self.name, pow(a.value, -1, self.order))

    def _check(self, s: Scalar) -> None:
        if s.group != self.name or not 0 < s.value < self.order:
            raise GroupError(f"scalar does not belong to group {self.name}")

    def count(self, buf: bytes | bytearray | memoryview) -> int:
        """Number of elements in a flat buffer; rejects a ragged length."""
        size = len(buf)
        if size % self.element_size:
            raise GroupError(f"buffer of {size} bytes is not a whole number of elements")
        return size // self.element_size

    @abstractmethod
    def hash_to_group(self, items: Sequence[bytes]) -> bytearray:
        """Hash each input to a group element; a flat buffer in input order."""

    @abstractmethod
    def exp(self, scalar: Scalar, elements: bytes | bytearray | memoryview) -> bytearray:
        """Raise every element of a flat buffer to `scalar`; GroupError on an invalid element."""


class Ristretto255(Group):
    """ristretto255 from libsodium: 32-byte canonical encodings, hash from 64 bytes of SHA-512."""

    name = "ristretto255"
    element_size = 32
    order = 2**252 + 27742317777372353535851937790883648493

    def __init__(self) -> None:
        self._lib = _sodium.lib()

    def hash_to_group(self, items: Sequence[bytes]) -> bytearray:
        n = len(items)
        out = bytearray(32 * n)
        if n == 0:
            return out
        out_addr = _sodium.address(out)
        from_hash = self._lib.crypto_core_ristretto255_from_hash
        sha512 = hashlib.sha512

        def work(start: int, stop: int) -> bool:
            digests = bytearray(64 * (stop - start))
            for i in range(start, stop):
                j = 64 * (i - start)
                digests[j : j + 64] = sha512(items[i]).digest()
            d_addr = _sodium.address(digests)
            for i in range(start, stop):
                from_hash(out_addr + 32 * i, d_addr + 64 * (i - start))
            return True

        _parallel(n, work)
        return out

    def exp(self, scalar: Scalar, elements: bytes | bytearray | memoryview) -> bytearray:
        self._check(scalar)
        n = self.count(elements)
        src = elements if isinstance(elements, bytearray) else bytearray(elements)
        out = bytearray(32 * n)
        if n == 0:
            return out
        s_buf = bytearray(scalar.value.to_bytes(32, "little"))
        s_addr = _sodium.address(s_buf)
        src_addr = _sodium.address(src)
        out_addr = _sodium.address(out)
        mult = self._lib.crypto_scalarmult_ristretto255

        def work(start: int, stop: int) -> bool:
            bad = 0
            for i in range(start, stop):
                bad |= mult(out_addr + 32 * i, s_addr, src_addr + 32 * i)
            return bad == 0

        ok = _parallel(n, work)
        s_buf[:] = bytes(32)
        if not ok:
            raise GroupError("invalid ristretto255 element (or identity result) in input")
        return out


# NIST P-256 (secp256r1) parameters.
_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_A = _P - 3
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _p256_random_oracle(m: bytes) -> int:
    """SHA3-256 random oracle widened to bits(p) + 256 bits, as in the reference (spec §1.1)."""
    hi = int.from_bytes(hashlib.sha3_256(b"\x01" + m).digest(), "big")
    lo = int.from_bytes(hashlib.sha3_256(b"\x02" + m).digest(), "big")
    return (hi * 2**256 + lo) % _P


def p256_hash_point(data: bytes) -> tuple[int, int]:
    """Try-and-increment hash to P-256 with y forced even (the reference's H)."""
    p = gmpy2.mpz(_P)
    x = gmpy2.mpz(_p256_random_oracle(data))
    while True:
        y2 = (x * x * x + _A * x + _B) % p
        if y2 != 0 and gmpy2.powmod(y2, (p - 1) // 2, p) == 1:
            y = gmpy2.powmod(y2, (p + 1) // 4, p)
            if y % 2:
                y = p - y
            return int(x), int(y)
        xi = int(x)
        x = gmpy2.mpz(_p256_random_oracle(xi.to_bytes((xi.bit_length() + 7) // 8, "big")))


class P256(Group):
    """NIST P-256, SEC1-compressed 33-byte encodings, compatible with the C++ reference's H.

    Scalar multiplication goes through OpenSSL's ECDH (via `cryptography`), which yields only
    the x-coordinate; results are therefore encoded as 0x02 || x, i.e. elements are taken up to
    sign. That is exactly what commutative encryption needs: x(k·P) = x(k·(-P)).
    """

    name = "p256"
    element_size = 33
    order = _N

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self._ec = ec

    def hash_to_group(self, items: Sequence[bytes]) -> bytearray:
        out = bytearray(33 * len(items))
        for i, item in enumerate(items):
            x, y = p256_hash_point(item)
            out[33 * i] = 2 + (y & 1)
            out[33 * i + 1 : 33 * i + 33] = x.to_bytes(32, "big")
        return out

    def exp(self, scalar: Scalar, elements: bytes | bytearray | memoryview) -> bytearray:
        self._check(scalar)
        n = self.count(elements)
        src = memoryview(elements)
        out = bytearray(33 * n)
        ec = self._ec
        curve = ec.SECP256R1()
        key = ec.derive_private_key(scalar.value, curve)
        ecdh = ec.ECDH()

        def work(start: int, stop: int) -> bool:
            for i in range(start, stop):
                enc = bytes(src[33 * i : 33 * i + 33])
                try:
                    point = ec.EllipticCurvePublicKey.from_encoded_point(curve, enc)
                    x = key.exchange(ecdh, point)
                except ValueError:
                    return False
                out[33 * i] = 2
                out[33 * i + 1 : 33 * i + 33] = x
            return True

        if not _parallel(n, work):
            raise GroupError("invalid P-256 element in input")
        return out


_GROUPS: dict[str, Callable[[], Group]] = {"ristretto255": Ristretto255, "p256": P256}


@cache
def get_group(name: str) -> Group:
    """The group called `name` ("ristretto255" or "p256")."""
    try:
        return _GROUPS[name]()
    except KeyError:
        raise GroupError(f"unknown group {name!r}; choose one of {sorted(_GROUPS)}") from None


__all__ = ["P256", "Group", "Ristretto255", "Scalar", "get_group", "p256_hash_point"]
