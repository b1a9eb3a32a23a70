"""Choosing tau, the IntersectMask dummy block size, from a privacy budget (spec §5).

Each DPCA-PSI run reveals k per-round counts, each noised by H ~ Hypergeometric(2tau, tau, tau).
Over T runs that is k*T sensitivity-1 releases; tau is the smallest integer for which their
tight (privacy-loss-distribution) composition meets (epsilon, delta), delta = 1/(10N) unless
given. The accounting is Google's `dp-accounting` with the exact settings that reproduce the
upstream tables (pessimistic estimate, discretisation 1e-5). tau is never silently zero: bad
budgets raise `TauError`.

One PLD evaluation takes a few seconds, so the search starts from a Gaussian approximation
(usually within a handful of the answer), gallops to a bracket and bisects the monotone
predicate; answers are cached in-process and on disk under $VEIL_HOME/cache/.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.psi.errors import PsiError

__all__ = ["MAX_TAU", "TauChoice", "TauError", "choose_tau", "compute_tau", "delta_for_tau"]

MAX_TAU = 2**20
"""Largest tau the protocol accepts (upstream's `precomputed_tau` bound)."""

_MAX_IDS = 100
_DISCRETIZATION = 1e-5
_CACHE_VERSION = 1
_CACHE_FILE = "psi_tau.json"


class TauError(PsiError, ValueError):
    """The privacy parameters are invalid or cannot be met by any admissible tau."""


@dataclass(frozen=True)
class TauChoice:
    """A computed tau and what it costs: every tau carries its accounting."""

    tau: int
    ids: int
    queries: int
    epsilon: float
    delta: float
    n: int
    compositions: int
    """k*T: the number of sensitivity-1 releases composed."""
    achieved_delta: float
    """delta(epsilon) of the k*T-fold composition at this tau (<= delta)."""
    dummy_rows: int
    """Dummy rows each party appends (k*tau)."""
    overhead_fraction: float
    """dummy_rows / n: the row overhead relative to the real data."""
    expected_dummy_matches: float
    """Expected dummy-dummy matches added to the revealed intersection (k*tau/2)."""


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TauError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise TauError(f"{name} must be {bound}, got {value}")
    return value


def _check_epsilon(epsilon: object) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise TauError(f"epsilon must be a number, got {type(epsilon).__name__}")
    eps = float(epsilon)
    if not math.isfinite(eps) or eps <= 0:
        raise TauError(f"epsilon must be finite and > 0, got {epsilon!r}")
    return eps


def _check_delta(delta: object) -> float:
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise TauError(f"delta must be a number, got {type(delta).__name__}")
    d = float(delta)
    if not math.isfinite(d) or not 0 < d < 1:
        raise TauError(f"delta must be in (0, 1), got {delta!r}")
    return d


def _log_pmf(tau: int) -> dict[int, float]:
    """log P[H = h] for H ~ Hyp(2tau, tau, tau): P(h) = C(tau,h)^2 / C(2tau,tau)."""
    import numpy as np
    from scipy.special import gammaln

    h = np.arange(tau + 1, dtype=np.float64)
    log_binom = gammaln(tau + 1.0) - gammaln(h + 1.0) - gammaln(tau - h + 1.0)
    log_central = gammaln(2.0 * tau + 1.0) - 2.0 * gammaln(tau + 1.0)
    values = 2.0 * log_binom - log_central
    return {int(i): float(v) for i, v in enumerate(values)}


def delta_for_tau(tau: int, compositions: int, epsilon: float) -> float:
    """delta(epsilon) of `compositions` releases of count + Hyp(2tau, tau, tau) noise.

    Adjacent inputs are c and c+1 (the mechanism is symmetric, so one direction suffices).
    """
    tau = _check_int("tau", tau, 0, MAX_TAU)
    compositions = _check_int("compositions", compositions, 1)
    eps = _check_epsilon(epsilon)
    if tau == 0:
        return 1.0  # no noise: the count itself is released
    return _delta(tau, compositions, eps)


@functools.lru_cache(maxsize=1024)
def _delta(tau: int, compositions: int, epsilon: float) -> float:
    from dp_accounting.pld import privacy_loss_distribution as pld

    at_c = _log_pmf(tau)  # output law when the true count is c (shifted by c)
    at_c_plus_1 = {h + 1: v for h, v in at_c.items()}
    with warnings.catch_warnings():
        # scipy's logsumexp warns on the +inf privacy loss at h = 0; the result is exact.
        warnings.simplefilter("ignore", RuntimeWarning)
        dist = pld.from_two_probability_mass_functions(
            at_c,
            at_c_plus_1,
            pessimistic_estimate=True,
            value_discretization_interval=_DISCRETIZATION,
        )
        return float(dist.self_compose(compositions).get_delta_for_epsilon(epsilon))


def _gaussian_estimate(compositions: int, epsilon: float, delta: float) -> int:
    """Smallest tau whose Gaussian approximation meets (eps, delta): the search's start point.

    Var[H] = tau^2 / (4(2tau-1)); k*T Gaussian releases of sensitivity 1 compose to one with
    sigma / sqrt(kT), whose exact delta(eps) is Balle-Wang's analytic formula.
    """
    from scipy.stats import norm

    def ok(tau: int) -> bool:
        sigma = math.sqrt(tau * tau / (4.0 * (2.0 * tau - 1.0)) / compositions)
        d = norm.cdf(0.5 / sigma - epsilon * sigma) - math.exp(epsilon) * norm.cdf(
            -0.5 / sigma - epsilon * sigma
        )
        return bool(d <= delta)

    if ok(1):
        return 1
    lo, hi = 1, 2
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > 4 * MAX_TAU:
            return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


@functools.lru_cache(maxsize=256)
def _search(compositions: int, epsilon: float, delta: float) -> tuple[int, float]:
    """(tau, achieved delta): smallest tau with delta_for_tau(tau) <= delta."""

    def achieved(tau: int) -> float:
        return delta_for_tau(tau, compositions, epsilon)

    def ok(tau: int) -> bool:
        return tau >= 1 and achieved(tau) <= delta

    estimate = _gaussian_estimate(compositions, epsilon, delta)
    if estimate > MAX_TAU:
        raise TauError(
            f"the budget needs tau of about {estimate} > {MAX_TAU}; raise epsilon or delta, "
            "or allow fewer queries"
        )
    start = max(1, estimate)
    step = 1
    if ok(start):
        hi, lo = start, start - 1
        while lo >= 1 and ok(lo):
            hi, step = lo, step * 2
            lo = max(0, hi - step)
    else:
        lo, hi = start, start + 1
        while not ok(hi):
            if hi >= MAX_TAU:
                raise TauError(
                    f"no tau <= {MAX_TAU} meets epsilon={epsilon}, delta={delta} over "
                    f"{compositions} releases"
                )
            lo, step = hi, step * 2
            hi = min(MAX_TAU, lo + step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, achieved(hi)


def _cache_path(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return cache_dir / _CACHE_FILE
    from veil.settings import default_home

    return default_home() / "cache" / _CACHE_FILE


def _cache_key(compositions: int, epsilon: float, delta: float) -> str:
    return f"v{_CACHE_VERSION}:{_DISCRETIZATION!r}:{compositions}:{epsilon!r}:{delta!r}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or corrupt: recompute (the cache only saves time)
    return data if isinstance(data, dict) else {}


def _cached(path: Path, key: str, delta: float) -> tuple[int, float] | None:
    entry = _read_cache(path).get(key)
    if not (isinstance(entry, list) and len(entry) == 2):
        return None
    tau, achieved = entry
    if isinstance(tau, bool) or not isinstance(tau, int) or not 1 <= tau <= MAX_TAU:
        return None
    if not isinstance(achieved, float) or not 0.0 <= achieved <= delta:
        return None
    return tau, achieved


def _store(path: Path, key: str, value: tuple[int, float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = _read_cache(path)
        data[key] = list(value)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".psi_tau.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        return  # a read-only home only costs recomputation


def choose_tau(
    k: int,
    queries: int,
    epsilon: float,
    n: int,
    delta: float | None = None,
    *,
    cache_dir: Path | None = None,
    use_disk_cache: bool = True,
) -> TauChoice:
    """The smallest tau for k ID columns and T queries under (epsilon, delta), with its cost.

    `n` is N = max(n_S, n_R); delta defaults to 1/(10N). `cache_dir` overrides
    $VEIL_HOME/cache for the on-disk cache.
    """
    k = _check_int("k (ids)", k, 1, _MAX_IDS)
    queries = _check_int("queries (T)", queries, 1)
    n = _check_int("n (N)", n, 1)
    eps = _check_epsilon(epsilon)
    d = _check_delta(1.0 / (10.0 * n) if delta is None else delta)
    compositions = k * queries

    path = _cache_path(cache_dir)
    key = _cache_key(compositions, eps, d)
    hit = _cached(path, key, d) if use_disk_cache else None
    if hit is None:
        hit = _search(compositions, eps, d)
        if use_disk_cache:
            _store(path, key, hit)
    tau, achieved = hit
    return TauChoice(
        tau=tau,
        ids=k,
        queries=queries,
        epsilon=eps,
        delta=d,
        n=n,
        compositions=compositions,
        achieved_delta=achieved,
        dummy_rows=k * tau,
        overhead_fraction=k * tau / n,
        expected_dummy_matches=k * tau / 2.0,
    )


def compute_tau(k: int, queries: int, epsilon: float, n: int, delta: float | None = None) -> int:
    """The smallest tau meeting (epsilon, delta) over k*T releases; see `choose_tau`."""
    return choose_tau(k, queries, epsilon, n, delta).tau
