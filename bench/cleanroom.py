"""Clean-room platform overhead, measured over the real HTTP API on loopback.

    .venv/bin/python bench/cleanroom.py [--runs 5] [--rows 1000000]

Prints (1) submit -> released latency of a trivial .py job and a trivial notebook job with
the phase breakdown from the job's own transition timestamps, and (2) upload + encrypt +
view-building throughput for a CSV of --rows rows through the API.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import psutil
from _server import serving

POLICY = 'consumers = ["lab"]\nmin_group_size = 1\n[views.mock]\nrows = 1000\n'



def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    tmp = Path(tempfile.mkdtemp(prefix="veil-bench-"))
    stack = ExitStack()  # the server, stopped at the end
    admin = stack.enter_context(serving(tmp / "home", workers=1))
    admin.create_party("hospital")
    admin.create_party("lab")
    provider = admin.with_token(admin.create_user("p", "provider", "hospital")["token"])
    consumer = admin.with_token(admin.create_user("c", "consumer", "lab")["token"])

    # -- upload throughput ------------------------------------------------------------------
    rng = np.random.default_rng(1)
    n = args.rows
    frame = pd.DataFrame({"id": np.arange(n), "age": rng.integers(18, 90, n),
                          "region": rng.choice(["n", "s", "e", "w"], n),
                          "cost": rng.gamma(2, 100, n).round(2),
                          "flag": rng.random(n) < 0.5})
    csv = tmp / "big.csv"
    frame.to_csv(csv, index=False)
    size = csv.stat().st_size
    rss0 = psutil.Process().memory_info().rss
    start = time.perf_counter()
    info = provider.upload("big", csv, policy=POLICY, policy_format="toml")
    took = time.perf_counter() - start
    rss1 = psutil.Process().memory_info().rss
    print(f"\nupload + encrypt + views over HTTP: {n:,} rows, {size / 1e6:.1f} MB in {took:.2f} s"
          f" = {n / took:,.0f} rows/s, {size / 1e6 / took:.1f} MB/s;"
          f" server RSS growth {(rss1 - rss0) / 2**20:.0f} MiB; views {info['views']}")
    small = tmp / "small.csv"
    frame.head(1000).to_csv(small, index=False)
    provider.upload("small", small, policy=POLICY, policy_format="toml")

    # -- submit -> released -----------------------------------------------------------------
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import veil\nveil.publish('x', 1)")]
    bundles = {"trivial .py": ("a.py", b"import veil\nveil.publish('x', 1)\n"),
               "trivial notebook": ("a.ipynb", nbformat.writes(nb).encode())}
    print(f"\nsubmit -> released (p50 of {args.runs} runs, seconds)")
    print(f"{'job':18} {'total':>7} {'submit':>7} {'queue':>7} {'run':>7} {'sandbox start':>14}"
          f" {'gate':>7}")
    for label, (name, data) in bundles.items():
        rows = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            job = consumer.submit({name: data}, entrypoint=name, inputs=["hospital/small"],
                                  outputs=["x"])
            t_sub = time.perf_counter() - t0
            provider.approve(job["id"], job["digest"])
            job = consumer.wait(job["id"], {"output_review", "released", "failed"},
                                poll_s=0.01)
            if job["state"] == "output_review":
                job = provider.review_output(job["id"], "x", "approve")
            total = time.perf_counter() - t0
            at = {t["to"]: _ts(t["at"]) for t in job["transitions"]}
            rows.append((total, t_sub, at["running"] - at["approved"],
                         at["output_review"] - at["running"],
                         job["result"].get("sandbox_start_s") or float("nan"),
                         at["released"] - at["output_review"]))
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(f"{label:18} {med[0]:7.3f} {med[1]:7.3f} {med[2]:7.3f} {med[3]:7.3f}"
              f" {med[4]:14.3f} {med[5]:7.3f}")
    print("\n'run' is the sandbox run (start + interpreter + notebook kernel); platform overhead"
          " = total - run.")
    stack.close()


if __name__ == "__main__":
    main()
