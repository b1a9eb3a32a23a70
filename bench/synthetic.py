"""Time and peak memory of a DP synthetic view: 10 mixed columns at eps = 1.

Usage: .venv/bin/python bench/synthetic.py [--rows 10000 100000 1000000] [--method mst|aim]
       [--public]   (provider passes bounds and categories; otherwise they are chosen with DP)

Each size runs in a fresh subprocess so peak RSS is per fit. Target: 10^5 rows in <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _frame(n: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    age = rng.integers(18, 90, n)
    df = pd.DataFrame(
        {
            "age": age,
            "income": rng.lognormal(10, 1, n) * (1 + (age > 50)),
            "cost": rng.gamma(2, 500, n) + 10 * age,
            "score": rng.normal(0, 1, n),
            "visits": rng.poisson(3, n),
            "sex": rng.choice(["F", "M"], n),
            "region": rng.choice(["n", "s", "e", "w", "c"], n),
            "plan": rng.choice(["a", "b", "c"], n),
            "smoker": rng.choice([True, False], n),
            "grade": rng.choice(list("ABCDEFG"), n),
        }
    )
    df.loc[rng.random(n) < 0.1, "cost"] = np.nan
    df.loc[rng.random(n) < 0.05, "region"] = None
    return df


def _one(n: int, method: str, public: bool) -> dict[str, object]:
    from veil.privacy.synthetic import fit_synthetic

    df = _frame(n)
    kw: dict[str, object] = {}
    if public:
        kw = {
            "bounds": {"age": (18, 90), "income": (0, 4e5), "cost": (0, 6000),
                       "score": (-4, 4), "visits": (0, 15)},
            "categories": {"sex": ["F", "M"], "region": list("nsewc"), "plan": list("abc"),
                           "smoker": [True, False], "grade": list("ABCDEFG")},
        }
    t0 = time.perf_counter()
    view = fit_synthetic(df, epsilon=1.0, method=method, rows=n, seed=0, **kw)  # type: ignore[arg-type]
    secs = time.perf_counter() - t0
    rep = view.fidelity
    return {
        "rows": n,
        "method": method,
        "domains": "public" if public else "dp",
        "seconds": round(secs, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "epsilon": round(view.epsilon, 6),
        "delta": view.delta,
        "mean_1way_tv": round(sum(rep.columns.values()) / len(rep.columns), 4),
        "mean_2way_tv": round(sum(rep.pairs.values()) / len(rep.pairs), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--method", choices=["mst", "aim"], default="mst")
    ap.add_argument("--public", action="store_true")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_one(args.child, args.method, args.public)))
        return
    for n in args.rows:
        cmd = [sys.executable, __file__, "--child", str(n), "--method", args.method]
        if args.public:
            cmd.append("--public")
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"rows={n}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"rows={r['rows']:>9,} method={r['method']} domains={r['domains']:<6} "
            f"time={r['seconds']:>7.1f}s peak_rss={r['peak_rss_mb']:>8.1f}MB "
            f"eps={r['epsilon']} delta={r['delta']:.0e} "
            f"1-way TV={r['mean_1way_tv']} 2-way TV={r['mean_2way_tv']}"
        )


if __name__ == "__main__":
    main()
