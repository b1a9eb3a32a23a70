"""Leakage-audit benchmark: what `veil psi audit` costs, phase by phase, as |X| grows.

    .venv/bin/python bench/psi_audit.py [--sizes 20,100] [--reps 20] [--calls 1-30]
                                        [--faithful-runs 5]

Per size (|X| = |Y|, half in common): the tau search (8 PLD searches, cached under
$VEIL_HOME/cache after the first run), the full default sweep (every oracle x attack x
epsilon x call budget, `reps` runs each), the cascade linkage game, and the cost of one
DPCA-PSI run through the real protocol (`run_local`, k = 1, tau for epsilon = 1) that the
faithful oracle pays per call. Prints wall and CPU seconds per phase and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from veil.cli.psi_audit import _calls
from veil.psi.audit.linkage import linkage_test
from veil.psi.audit.oracles import DpcaFaithful
from veil.psi.audit.population import make_population
from veil.psi.audit.sweep import SweepConfig, run_sweep
from veil.psi.tau import choose_tau


def _timed(fn):  # type: ignore[no-untyped-def]
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _one(size: int, args: argparse.Namespace) -> None:
    cfg = SweepConfig(n_x=size, n_y=size, intersection=size // 2, calls=_calls(args.calls),
                      reps=args.reps, seed=1)
    n = max(cfg.n_x, cfg.n_y)
    taus: dict[tuple[int, float], int] = {}

    def search() -> None:
        for eps in cfg.epsilons:
            for k in (1, cfg.k_multi):
                taus[(k, eps)] = choose_tau(k, cfg.queries, eps, n).tau

    _, w, c = _timed(search)
    print(f"| {size} | tau search ({len(taus)} values) | - | {w:.1f} | {c:.1f} |")
    rows, w, c = _timed(lambda: run_sweep(cfg, lambda k, e: taus[(k, e)]))
    print(f"| {size} | sweep (default oracles x attacks) | {len(rows)} | {w:.1f} | {c:.1f} |")
    eps = min(cfg.epsilons)
    _, w, c = _timed(lambda: linkage_test(taus[(2, eps)], epsilon=eps, delta=cfg.delta,
                                          trials=2000, faithful_trials=4))
    print(f"| {size} | linkage game (2000 sampled + 4 real per world) | - | {w:.1f} | {c:.1f} |")
    pop = make_population(size, size, size // 2, rng=np.random.default_rng(1))
    oracle = DpcaFaithful(pop, taus[(1, eps)])
    everyone = np.arange(pop.n)
    runs = args.faithful_runs
    _, w, c = _timed(lambda: [oracle.query(everyone) for _ in range(runs)])
    print(f"| {size} | one real DPCA-PSI run (tau {taus[(1, eps)]}), mean of {runs} | - | "
          f"{w / runs:.2f} | {c / runs:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--calls", default="1-30")
    ap.add_argument("--faithful-runs", type=int, default=5)
    args = ap.parse_args()
    print("| |X| | phase | points | wall s | CPU s |")
    print("|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        _one(size, args)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
