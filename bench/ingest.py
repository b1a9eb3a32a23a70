"""Ingest throughput: upload + parse + encrypt + schema + mock/sample views, one streamed pass.

    .venv/bin/python bench/ingest.py --rows 1000000            # CSV
    .venv/bin/python bench/ingest.py --rows 1000000 --format parquet
    .venv/bin/python bench/ingest.py --rows 10000000           # memory stays bounded

The input file is generated first (chunked, on disk); the ingest then runs in a fresh child
process so its peak RSS is the ingest's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

_CHUNK = 250_000


def _chunk(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    cities = np.array(["paris", "lyon", "nice", "lille", "nantes", "brest", "metz", "pau"])
    ids = np.arange(start, start + n)
    return pa.table({
        "id": ids,
        "age": rng.integers(18, 95, n),
        "city": cities[rng.integers(0, len(cities), n)],
        "income": np.round(rng.normal(40_000, 12_000, n), 2),
        "day": pa.array(rng.integers(18_000, 20_000, n).astype("int32")).cast(pa.date32()),
        "member": rng.random(n) < 0.3,
        "note": pa.array([f"n{v:x}" for v in rng.integers(0, 1 << 40, n)]),
    })


def generate(path: Path, rows: int, fmt: str) -> None:
    rng = np.random.default_rng(0)
    first = _chunk(0, min(rows, _CHUNK), rng)
    writer: pacsv.CSVWriter | pq.ParquetWriter
    if fmt == "csv":
        writer = pacsv.CSVWriter(str(path), first.schema)
    else:
        writer = pq.ParquetWriter(str(path), first.schema)
    writer.write_table(first)
    done = first.num_rows
    while done < rows:
        n = min(_CHUNK, rows - done)
        writer.write_table(_chunk(done, n, rng))
        done += n
    writer.close()


def child(path: Path, fmt: str) -> None:
    from veil.catalog import ingest, parse_policy, read_dataset, view_builders_for
    from veil.crypto import DataKey

    policy = parse_policy("[views.sample]\npublishable = true\nrows = 1000", format="toml")
    dek = DataKey.generate()
    dest = path.with_suffix(".enc")
    size = path.stat().st_size
    t0 = time.perf_counter()
    with open(path, "rb") as src:
        result = ingest(src, filename=path.name, max_bytes=size, dest=dest, dek=dek,
                        context=b"bench", views=view_builders_for(policy, seed=1), policy=policy)
    t1 = time.perf_counter()
    read_rows = sum(b.num_rows for b in read_dataset(dest, dek, context=b"bench"))
    t2 = time.perf_counter()
    assert read_rows == result.rows
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "rows": result.rows, "input_mb": size / 1e6, "stored_mb": result.stored_bytes / 1e6,
        "ingest_s": t1 - t0, "read_back_s": t2 - t1, "peak_rss_mib": peak_mib,
    }))
    dest.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--format", choices=["csv", "parquet"], default="csv")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.format)
        return
    with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp:
        path = Path(tmp) / f"data.{args.format}"
        t0 = time.perf_counter()
        generate(path, args.rows, args.format)
        print(f"generated {args.rows:,} rows of {args.format} "
              f"({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s")
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path), "--format", args.format],
            check=True, capture_output=True, text=True, env={**os.environ},
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"ingest (parse + encrypt + schema + mock + sample views): {r['ingest_s']:.2f}s")
    print(f"  {r['rows'] / r['ingest_s']:,.0f} rows/s, {r['input_mb'] / r['ingest_s']:.1f} MB/s "
          f"of {args.format} input")
    print(f"  stored (encrypted Arrow IPC, lz4): {r['stored_mb']:.1f} MB")
    print(f"read back (decrypt + verify, streamed): {r['read_back_s']:.2f}s, "
          f"{r['rows'] / r['read_back_s']:,.0f} rows/s")
    print(f"peak RSS of the ingest process: {r['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
