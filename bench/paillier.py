"""Paillier throughput for DPCA-PSI's payload phase: prints one table per key size.

Run: .venv/bin/python bench/paillier.py [--count 400] [--bits 2048 3072] [--keygens 3]

Rows are single-thread (workers=1) and thread-pool (workers=W) figures; gmpy2 releases the
GIL in pool threads, so W > 1 scales with free cores. "phe encrypt" is python-paillier on
the same modulus (r^n mod n^2, no DJN) for reference; "powmod DJN" is DJN without the
fixed-base table.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import Callable

import gmpy2
from phe import paillier as phe

from veil.psi.paillier import (
    encrypt_payload,
    generate_keypair,
    mask_and_pack,
    mask_rows,
    unpack_and_decrypt,
)


def _rate(fn: Callable[[], object], items: int) -> float:
    start = time.perf_counter()
    fn()
    return items / (time.perf_counter() - start)


def _bench(bits: int, count: int, keygens: int, workers: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    start = time.perf_counter()
    for _ in range(keygens):
        pk, sk = generate_keypair(bits)
    rows.append(("keygen (s/key)", f"{(time.perf_counter() - start) / keygens:.3f}"))

    start = time.perf_counter()
    pk.encrypt_vector([1])  # builds the fixed-base table
    rows.append(("fixed-base table build (s)", f"{time.perf_counter() - start:.3f}"))

    values = [secrets.randbits(64) for _ in range(count)]
    for w in (1, workers):
        rows.append(
            (
                f"encrypt/s (workers={w})",
                f"{_rate(lambda w=w: encrypt_payload(pk, values, workers=w), count):,.0f}",
            )
        )
    n2, alpha_bits = pk.n2, pk.exponent_bits

    def powmod_djn() -> None:
        for m in values[:100]:
            rho = gmpy2.powmod(pk.hs, secrets.randbits(alpha_bits), n2)
            _ = (1 + pk.n * m) * rho % n2

    rows.append(("powmod DJN encrypt/s (no table, 1 thread)", f"{_rate(powmod_djn, 100):,.0f}"))
    phe_pk = phe.PaillierPublicKey(int(pk.n))
    rows.append(
        (
            "phe encrypt/s (1 thread)",
            f"{_rate(lambda: [phe_pk.raw_encrypt(m) for m in values[:50]], 50):,.0f}",
        )
    )

    enc = encrypt_payload(pk, values, workers=workers)
    for w in (1, workers):
        rows.append(
            (
                f"decrypt/s CRT (workers={w})",
                f"{_rate(lambda w=w: sk.decrypt_vector(enc, workers=w), count):,.0f}",
            )
        )
    small = enc.select(range(min(count, 100)))
    rows.append(
        (
            "decrypt/s no CRT (workers=1)",
            f"{_rate(lambda: sk.decrypt_vector(small, crt=False, workers=1), len(small)):,.0f}",
        )
    )
    for w in (1, workers):
        rows.append(
            (
                f"re-randomise/s (workers={w})",
                f"{_rate(lambda w=w: enc.rerandomize(workers=w), count):,.0f}",
            )
        )
    packed, _ = mask_and_pack(pk, enc, workers=workers)
    for w in (1, workers):
        rows.append(
            (
                f"mask_and_pack rows/s (workers={w})",
                f"{_rate(lambda w=w: mask_and_pack(pk, enc, workers=w), count):,.0f}",
            )
        )
        rate = _rate(lambda w=w: unpack_and_decrypt(sk, packed, count, workers=w), count)
        rows.append((f"packed decrypt rows/s (workers={w})", f"{rate:,.0f}"))
    for w in (1, workers):  # packing="owner" / "none": one re-randomisation per row
        rows.append(
            (
                f"mask_rows rows/s (workers={w})",
                f"{_rate(lambda w=w: mask_rows(pk, enc, workers=w), count):,.0f}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=400, help="values per batch")
    parser.add_argument("--bits", type=int, nargs="+", default=[2048, 3072])
    parser.add_argument("--keygens", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    print(
        f"command: .venv/bin/python bench/paillier.py --count {args.count} "
        f"--bits {' '.join(map(str, args.bits))} --keygens {args.keygens} "
        f"--workers {args.workers}"
    )
    print(f"cpus available: {len(os.sched_getaffinity(0))}, load avg: {os.getloadavg()}")
    for bits in args.bits:
        rows = _bench(bits, args.count, args.keygens, args.workers)
        width = max(len(name) for name, _ in rows)
        print(f"\nPaillier {bits}-bit (gmpy2 {gmpy2.version()}, {args.count} values)")
        print(f"{'operation':<{width}}  value")
        print("-" * (width + 14))
        for name, value in rows:
            print(f"{name:<{width}}  {value:>12}")


if __name__ == "__main__":
    main()
