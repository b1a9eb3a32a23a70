"""PPAM on SPU (Cheetah 2PC): attribution + lift over N matched rows, both parties on this machine.

Run: .venv/bin/python bench/ppam.py [--sizes 10000 100000] [--campaigns 3] [--epsilon 1]

Each size starts two SPU processes (one per party, `.venv-mpc`) linked over 127.0.0.1 and feeds
each the additive shares (mod 2^64) of N matched rows (t0, campaign, group, t1, value, real;
a quarter are dummy rows), as `veil psi run` leaves them. Metrics conversions, value and lift
over the campaigns, cap 500, MPC-DualDP noise. Printed per size: wall time (slowest party),
MPC run time, CPU and peak RSS per party (of its SPU process), MB sent per party (kernel TCP
counters), the shared coins, and the largest deviation from the plaintext model in noise sds.
DPCA-PSI itself (the run that produces the shares) is measured by bench/psi.py.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

import numpy as np

from veil.psi.ppam.engine import EngineResult, WorkerJob, default_mpc_python, run_engine
from veil.psi.ppam.measure import plain_aggregates, report
from veil.psi.ppam.plan import MeasurePlan, ShareColumns

NAMES = ("sender:t0", "sender:campaign", "sender:group", "receiver:t1", "receiver:value",
         "receiver:real")


def _rows(n: int, campaigns: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t0 = rng.integers(1_700_000_000, 1_702_000_000, n)
    rows = np.stack([t0, rng.integers(1, campaigns + 1, n), rng.integers(0, 2, n),
                     t0 + rng.integers(-3 * 86400, 14 * 86400, n), rng.integers(0, 900, n),
                     np.ones(n, np.int64)], axis=1).astype(np.uint64)
    dummies = n // 4
    rows[:dummies, :5] = rng.integers(0, 2**64, (dummies, 5), dtype=np.uint64)
    rows[:dummies, 5] = 0
    return rows


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def run(n: int, campaigns: int, epsilon: float) -> dict[str, float]:
    rows = _rows(n, campaigns)
    a = np.random.default_rng(2).integers(0, 2**64, rows.shape, dtype=np.uint64)
    shares = (a, rows - a)
    plan = MeasurePlan(
        ShareColumns("sender:t0", "receiver:t1", "receiver:value", "sender:campaign",
                     "sender:group", "receiver:real"),
        window=7 * 86400, cap=500, metrics=("conversions", "value", "lift"), epsilon=epsilon,
        campaigns=tuple(range(1, campaigns + 1)))
    addresses = (_port(), _port())
    out: dict[int, EngineResult] = {}

    def party(rank: int) -> None:
        job = WorkerJob(rank, addresses, plan.to_worker(), n, NAMES, "both",  # type: ignore[arg-type]
                        timeout_s=1800)
        out[rank] = run_engine(default_mpc_python(), job, shares[rank])

    start = time.perf_counter()
    threads = [threading.Thread(target=party, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    rep = report("publisher", plan, out[0])
    plain = plain_aggregates(plan, NAMES, rows)
    worst = max(abs(rep.aggregates[g.name].value - plain[g.name]) / g.noise.sd
                for g in plan.aggregates())
    s0, s1 = out[0].stats, out[1].stats
    return {
        "n": n, "wall": wall, "mpc": float(s0["mpc_run_s"] or 0),
        "cpu0": float(s0["cpu_s"] or 0), "cpu1": float(s1["cpu_s"] or 0),
        "rss0": float(s0["peak_rss_mb"] or 0), "rss1": float(s1["peak_rss_mb"] or 0),
        "mb0": (s0["bytes_sent"] or 0) / 1e6, "mb1": (s1["bytes_sent"] or 0) / 1e6,
        "coins": float(s0["coins"] or 0), "worst_sd": worst,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--campaigns", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=1.0)
    args = parser.parse_args()
    print(f"PPAM on SPU/Cheetah, FM64: conversions,value,lift; {args.campaigns} campaigns x "
          f"2 groups; cap 500; epsilon {args.epsilon}; 2 parties on this machine")
    print(f"{'rows':>9} {'wall s':>8} {'mpc s':>8} {'CPU P/A s':>15} {'MB sent P/A':>17} "
          f"{'peak RSS P/A MB':>17} {'coins':>9} {'max |err|/sd':>12}")
    for n in args.sizes:
        r = run(n, args.campaigns, args.epsilon)
        print(f"{n:>9} {r['wall']:>8.1f} {r['mpc']:>8.1f} "
              f"{r['cpu0']:>7.1f}/{r['cpu1']:<7.1f} {r['mb0']:>8.1f}/{r['mb1']:<8.1f} "
              f"{r['rss0']:>8.0f}/{r['rss1']:<8.0f} {r['coins']:>9.0f} {r['worst_sd']:>12.2f}",
              flush=True)


if __name__ == "__main__":
    main()
