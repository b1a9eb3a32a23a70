"""Statistical evidence: noise has the claimed scale; an empirical privacy audit of count and mean.

OpenDP draws its noise from the OS CSPRNG and cannot be seeded, so these tests use many draws and
tolerances derived from the sampling distribution (a false failure is a < 1e-6 event), not seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta

from veil import privacy
from veil.privacy import mechanisms as mech


def _discrete_laplace_mean_abs(t: float) -> float:
    q = math.exp(-1.0 / t)
    return 2 * q / (1 - q * q)


def test_count_noise_scale_matches_claim() -> None:
    df = pd.DataFrame({"a": range(50)})
    r = privacy.count(df, epsilon=0.5)
    meas = mech._m_count(r.params["scale"])  # the very measurement verify_cost rebuilds
    n = 4000
    errs = np.array([meas([True] * 50) - 50 for _ in range(n)], dtype=float)
    expect = _discrete_laplace_mean_abs(r.params["scale"])
    se = math.sqrt(2 * r.params["scale"] ** 2) / math.sqrt(n)  # sd(|X|) <= sqrt(E X^2)
    assert abs(np.abs(errs).mean() - expect) < 5 * se
    assert abs(errs.mean()) < 5 * se * 1.5


def test_sum_noise_scale_matches_claim() -> None:
    values = [1.0] * 100
    r = privacy.sum(pd.DataFrame({"x": values}), "x", bounds=(0, 10), epsilon=1.0)
    b = r.params["scale"]
    assert b == pytest.approx(10.0, rel=1e-4)  # sensitivity 10 / eps 1
    meas = mech._m_sum((0.0, 10.0), b)
    n = 4000
    errs = np.array([meas(values) - 100.0 for _ in range(n)])
    # Laplace(b): E|X| = b and sd(|X|) = b
    assert abs(np.abs(errs).mean() - b) < 5 * b / math.sqrt(n)
    # the median absolute error of Laplace(b) is b ln 2
    assert abs(np.median(np.abs(errs)) - b * math.log(2)) < 0.1 * b


def _audit_lower_bound(
    sample_d: Callable[[], float],
    sample_d2: Callable[[], float],
    n: int,
    alpha: float = 1e-6,
) -> float:
    """Lower confidence bound on eps from threshold events {out >= t} on neighbours D, D'.

    For each threshold, Clopper-Pearson bounds on both probabilities (Bonferroni over the
    thresholds and both directions); returns the largest eps the data proves at level alpha.
    """
    a = np.array([sample_d() for _ in range(n)])
    b = np.array([sample_d2() for _ in range(n)])
    ts = np.quantile(np.concatenate([a, b]), np.linspace(0.02, 0.98, 25))
    k = 2 * len(ts)
    best = 0.0
    for t in ts:
        for x, y in ((a, b), (b, a)):
            cx, cy = int((x >= t).sum()), int((y >= t).sum())
            if cx == 0:
                continue
            p_hi_lower = beta.ppf(alpha / (2 * k), cx, n - cx + 1)
            p_lo_upper = beta.ppf(1 - alpha / (2 * k), cy + 1, n - cy) if cy < n else 1.0
            if p_lo_upper > 0:
                best = max(best, math.log(p_hi_lower / p_lo_upper))
    return best


@pytest.fixture(scope="module")
def neighbours() -> tuple[list[float], list[float]]:
    d = [float(v) for v in [1, 2, 3, 4, 5, 2, 3, 1, 0, 4]]
    return d, [*d, 10.0]  # D' adds one row at the upper bound: the worst case for mean/sum


def test_audit_count_does_not_exceed_claim(neighbours: tuple[list[float], list[float]]) -> None:
    d, d2 = neighbours
    eps = 1.0
    r = privacy.count(pd.DataFrame({"x": d}), epsilon=eps)
    meas = mech._m_count(r.params["scale"])
    est = _audit_lower_bound(lambda: meas([True] * len(d)), lambda: meas([True] * len(d2)), 6000)
    assert est <= r.epsilon
    assert est > 0.3  # the audit has power: a correct mechanism does leak close to eps


def test_audit_mean_does_not_exceed_claim(neighbours: tuple[list[float], list[float]]) -> None:
    d, d2 = neighbours
    r = privacy.mean(pd.DataFrame({"x": d}), "x", bounds=(0, 10), epsilon=1.0)
    meas = mech._m_mean((0.0, 10.0), r.params["count_scale"], r.params["sum_scale"])

    def run(data: list[float]) -> float:
        _count, s = meas(data)
        return s  # the sum half carries the D/D' difference; the mean is post-processing of both

    est = _audit_lower_bound(lambda: run(d), lambda: run(d2), 6000)
    assert est <= r.epsilon


def test_audit_detects_an_under_noised_mechanism(
    neighbours: tuple[list[float], list[float]],
) -> None:
    """Negative control: a count with a third of the claimed noise is caught."""
    d, d2 = neighbours
    claimed = privacy.count(pd.DataFrame({"x": d}), epsilon=0.5)
    cheat = mech._m_count(claimed.params["scale"] / 3)
    est = _audit_lower_bound(lambda: cheat([True] * len(d)), lambda: cheat([True] * len(d2)), 6000)
    assert est > claimed.epsilon
