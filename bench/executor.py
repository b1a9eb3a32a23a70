"""Release-executor cost per declared query: `.venv/bin/python bench/executor.py [rows]`.

Default 10^6 rows. Writes an encrypted dataset the way ingest stores it (Arrow IPC, lz4, AES-GCM
envelope), then, in a fresh child process as the executor runs, times: decrypt + load, and
each plan's evaluation (contribution bounding, filters, OpenDP measurement). Prints seconds per
plan, the child's peak RSS, and the same data's Parquet size (the issue's budget: <= 1 s per
count/sum/mean, memory <= 2x the Parquet size; the interpreter and its libraries are in the RSS).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from veil.catalog.ingest import load_frame
from veil.crypto.envelope import DataKey
from veil.privacy.plans import SourceRules, evaluate, parse_plan
t_import = time.perf_counter() - t0
req = json.loads(sys.stdin.read())
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
frame = load_frame(Path(req["path"]), DataKey.from_bytes(bytes.fromhex(req["key"])),
                   context=b"bench")
out = {"import_s": t_import, "load_s": time.perf_counter() - t0, "plans": {}}
rules = {"b/data": SourceRules("b/data", "pid", 3, {"region": ["n", "s", "e", "w"]}, 10)}
for name, doc in req["plans"].items():
    t0 = time.perf_counter()
    evaluate(parse_plan(doc), {"b/data": frame}, rules)
    out["plans"][name] = time.perf_counter() - t0
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["rss_before_load_mib"] = rss0 / 1024
print(json.dumps(out))
"""


def _plans() -> dict[str, dict[str, object]]:
    rel = {"sources": ["b/data"], "join_on": None, "filters": []}
    filtered = {**rel, "filters": [{"column": "region", "op": "in", "value": ["n", "s"]}]}

    def dp(relation: dict[str, object], **measure: object) -> dict[str, object]:
        return {"query": {"kind": "dp", "relation": relation, "measure": measure}}

    return {
        "count": dp(rel, mechanism="count", epsilon=0.5),
        "sum": dp(rel, mechanism="sum", column="cost", bounds=[0, 1000], epsilon=0.5),
        "mean": dp(rel, mechanism="mean", column="cost", bounds=[0, 1000], epsilon=0.5),
        "mean (filtered)": dp(filtered, mechanism="mean", column="cost", bounds=[0, 1000],
                              epsilon=0.5),
        "grouped_count": dp(rel, mechanism="grouped_count", by=["region"], epsilon=0.5),
        "aggregate": {"query": {"kind": "aggregate", "relation": rel, "by": ["region"],
                                "aggregates": {"n": {"fn": "count_distinct", "column": "pid"},
                                               "cost": {"fn": "mean", "column": "cost"}}}},
    }


def main(rows: int) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from veil.crypto.envelope import DataKey, EncryptingWriter

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"pid": rng.integers(0, rows // 2, rows),
                          "region": rng.choice(["n", "s", "e", "w"], rows),
                          "cost": np.round(rng.gamma(2.0, 180.0, rows), 2)})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    parquet = io.BytesIO()
    frame.to_parquet(parquet, index=False)
    key = DataKey.generate()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.enc"
        with path.open("wb") as fh, EncryptingWriter(fh, key, context=b"bench") as enc:
            opts = pa.ipc.IpcWriteOptions(compression="lz4")
            with pa.ipc.new_stream(enc, table.schema, options=opts) as writer:
                writer.write_table(table, max_chunksize=65536)
        request = {"path": str(path), "key": key.to_bytes().hex(), "plans": _plans()}
        proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(request),
                              capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout)
    size_mib = len(parquet.getvalue()) / 2**20
    print(f"release executor on {rows:,} rows (Parquet {size_mib:.1f} MiB, "
          f"encrypted IPC {path.name})")
    print(f"  imports (pandas, pyarrow, OpenDP)  {out['import_s']:6.2f} s")
    print(f"  decrypt + load                     {out['load_s']:6.2f} s")
    for name, seconds in out["plans"].items():
        print(f"  {name:<34} {seconds:6.2f} s")
    grown = out["rss_mib"] - out["rss_before_load_mib"]
    print(f"  peak RSS {out['rss_mib']:.0f} MiB, of which {grown:.0f} MiB after the imports "
          f"({grown / size_mib:.1f}x the Parquet size)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
