"""The audit's sweep: every attack against every oracle it applies to, over call budgets and ε.

Pure: tau comes from the caller (`tau_for(k, epsilon)`, normally `veil.psi.tau.choose_tau` for
T = the largest call budget, the query budget the parties would enforce), randomness from
`seed`. Each (oracle, attack, ε, calls) point averages `reps` runs, each on a fresh random
population.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from veil.psi.audit.attacks import ATTACKS
from veil.psi.audit.metrics import dp_bound, score
from veil.psi.audit.oracles import (
    DpcaFaithful,
    DpcaSampling,
    MultiIdEcdh,
    Oracle,
    PlainEcdh,
    ReferenceMasking,
    SumOracle,
)
from veil.psi.audit.population import Population, make_population
from veil.psi.errors import AuditError

__all__ = ["ORACLES", "SweepConfig", "SweepRow", "run_sweep"]

ORACLES: dict[str, tuple[str, bool]] = {
    "ecdh": ("count", False),
    "multi-id-ecdh": ("count", False),
    "dpca-k1": ("count", True),
    "dpca-multi": ("count", True),
    "dpca-k1-faithful": ("count", True),
    "dpca-multi-faithful": ("count", True),
    "reference-masking": ("count", True),
    "ecdh-sum": ("sum", False),
    "ppam": ("sum", True),
    "ppam-dualdp": ("sum", True),
}
"""oracle name -> (the observation it offers: count or sum, whether it is DP-noised)."""


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep. Sizes follow AnonPSI's harness: |X| = |Y| = 20, half in common."""

    n_x: int = 20
    n_y: int = 20
    intersection: int = 10
    dense: int = 2
    k_multi: int = 2
    calls: tuple[int, ...] = tuple(range(1, 31))
    epsilons: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    reps: int = 20
    oracles: tuple[str, ...] = tuple(o for o in ORACLES if not o.endswith("-faithful"))
    attacks: tuple[str, ...] = tuple(ATTACKS)
    faithful_reps: int = 2
    """Runs per point of the faithful oracle (only at the largest call budget: it is slow)."""
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.calls or min(self.calls) < 0 or max(self.calls) > 1000:
            raise AuditError("calls must be a non-empty list of budgets in 0..1000")
        if not self.epsilons or any(not (math.isfinite(e) and e > 0) for e in self.epsilons):
            raise AuditError("every epsilon must be finite and > 0")
        if not 1 <= self.reps <= 100_000 or not 0 <= self.faithful_reps <= 1000:
            raise AuditError("reps must be in 1..100000 and faithful reps in 0..1000")
        unknown = [o for o in self.oracles if o not in ORACLES]
        if unknown:
            raise AuditError(f"unknown oracle(s) {unknown}; choose from {sorted(ORACLES)}")
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise AuditError(f"unknown attack(s) {unknown}; choose from {sorted(ATTACKS)}")
        if not 2 <= self.k_multi <= 8:
            raise AuditError(f"k for the multi-ID oracles must be in 2..8, got {self.k_multi}")
        # sizes are checked by make_population; check them now, before any work
        make_population(self.n_x, self.n_y, self.intersection, k=self.k_multi, dense=self.dense,
                        rng=np.random.default_rng(0))

    @property
    def queries(self) -> int:
        """T: the query budget tau is chosen for (the largest call budget swept)."""
        return max(1, max(self.calls))

    @property
    def delta(self) -> float:
        return 1.0 / (10.0 * max(self.n_x, self.n_y))


@dataclass(frozen=True)
class SweepRow:
    """One point: means over `reps` runs (fractions of |X|)."""

    oracle: str
    attack: str
    k: int
    epsilon: float | None
    tau: int
    calls: int
    reps: int
    leakage: float
    positive: float
    negative: float
    precision: float
    advantage: float
    advantage_sd: float
    bound: float | None
    """The DP membership-advantage bound this oracle claims (None: no DP claim)."""
    seconds: float


_Make = Callable[[Population, np.random.Generator], Oracle]


@dataclass
class _Point:
    oracle: str
    attack: str
    k: int
    epsilon: float | None
    tau: int
    bound: float | None
    make: _Make = field(repr=False)


def _applies(attack: str, kind: str, oracle: str) -> bool:
    need = ATTACKS[attack][1]
    if need == "linked":
        return oracle == "reference-masking"
    return need == kind


def _maker(oracle: str, tau: int, per_call: tuple[float, float]) -> _Make:
    """A fresh oracle per run, its dummy choices drawn from the sweep's generator."""

    def make(p: Population, r: np.random.Generator) -> Oracle:
        rb = _bytes_from(r)
        if oracle == "ecdh":
            return PlainEcdh(p)
        if oracle == "multi-id-ecdh":
            return MultiIdEcdh(p)
        if oracle == "ecdh-sum":
            return SumOracle(p)
        if oracle in ("dpca-k1", "dpca-multi"):
            return DpcaSampling(p, tau, rb)
        if oracle in ("dpca-k1-faithful", "dpca-multi-faithful"):
            return DpcaFaithful(p, tau, random_bytes=rb)
        if oracle == "reference-masking":
            return ReferenceMasking(p, tau, rb)
        if oracle == "ppam":
            return SumOracle(p, tau, random_bytes=rb)
        seed = int(r.integers(2**63))
        return SumOracle(p, tau, dualdp=per_call, random_bytes=rb,
                         rng=lambda: np.random.default_rng(seed))

    return make


def _points(cfg: SweepConfig, tau_for: Callable[[int, float], int]) -> Iterator[_Point]:
    km = cfg.k_multi
    for oracle in cfg.oracles:
        kind, dp = ORACLES[oracle]
        k = km if oracle in ("multi-id-ecdh", "dpca-multi", "dpca-multi-faithful") else 1
        for attack in cfg.attacks:
            if not _applies(attack, kind, oracle):
                continue
            if not dp:
                yield _Point(oracle, attack, k, None, 0, None, _maker(oracle, 0, (1.0, 0.5)))
                continue
            for eps in cfg.epsilons:
                tau = tau_for(k, eps)
                bound = dp_bound(eps, cfg.delta)
                # ppam-dualdp: (ε/T, δ/T) per call for the sums, so (2ε, 2δ) with the sizes
                per_call = (eps / cfg.queries, cfg.delta / cfg.queries)
                if oracle == "ppam-dualdp":
                    bound = dp_bound(2 * eps, 2 * cfg.delta)
                yield _Point(oracle, attack, k, eps, tau, bound, _maker(oracle, tau, per_call))


def _bytes_from(rng: np.random.Generator) -> Callable[[int], bytes]:
    """Dummy-choice randomness from the sweep's generator, so a `seed` reproduces a sweep."""
    return lambda size: rng.bytes(size)


def run_sweep(cfg: SweepConfig, tau_for: Callable[[int, float], int],
              progress: Callable[[str], None] | None = None) -> list[SweepRow]:
    """Run every applicable (oracle, attack, ε) over the call budgets; rows in sweep order."""
    rng = np.random.default_rng(cfg.seed)
    rows: list[SweepRow] = []
    for point in _points(cfg, tau_for):
        if progress:
            eps = "" if point.epsilon is None else f" ε={point.epsilon:g}"
            progress(f"{point.oracle} vs {point.attack}{eps}")
        faithful = point.oracle.endswith("-faithful")
        budgets: Sequence[int] = (max(cfg.calls),) if faithful else cfg.calls
        reps = cfg.faithful_reps if faithful else cfg.reps
        if reps == 0:
            continue
        fn = ATTACKS[point.attack][0]
        for calls in budgets:
            start = time.perf_counter()
            scores = []
            for _ in range(reps):
                pop = make_population(cfg.n_x, cfg.n_y, cfg.intersection, k=point.k,
                                      dense=cfg.dense, rng=rng)
                oracle = point.make(pop, rng)
                scores.append(score(fn(pop.values, oracle, calls, rng), pop.member))
            adv = np.array([s.advantage for s in scores])
            rows.append(SweepRow(
                oracle=point.oracle, attack=point.attack, k=point.k, epsilon=point.epsilon,
                tau=point.tau, calls=calls, reps=reps,
                leakage=float(np.mean([s.leakage for s in scores])),
                positive=float(np.mean([s.positive for s in scores])),
                negative=float(np.mean([s.negative for s in scores])),
                precision=float(np.mean([s.precision for s in scores])),
                advantage=float(adv.mean()),
                advantage_sd=float(adv.std(ddof=1)) if reps > 1 else 0.0,
                bound=point.bound, seconds=time.perf_counter() - start,
            ))
    return rows
