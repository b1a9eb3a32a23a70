"""MPC-DualDP accounting (spec §9): how many shared coins each released aggregate needs.

An aggregate of sensitivity s (one matched row added or removed changes it by at most s) is
released as round(f / q) + (Bin(N, 1/2) - N/2) in units of q = 2^shift, then multiplied by q.
Rounding to the lattice first keeps the coin count bounded for large sensitivities (a value
capped at 500 would need 8·500²·ln(2/δ)/ε² ≈ 10^7 coins at s = 500; on a lattice of q = 64
it is Δ = ⌊500/64⌋ + 1 = 8 units, ~10^5 coins, for about the same noise in value units). The
rounded aggregate moves by at most Δ = ⌊s/q⌋ + 1 lattice units (Δ = s when q = 1, no rounding).

N is the smallest even count whose δ(ε), computed by Google's dp-accounting (privacy loss
distribution, pessimistic), meets the declared δ, searched below the spec's formula
N = ⌈8·Δ²·ln(2/δ)/ε²⌉, which is loose: about half the coins (26% less noise) suffice. The
formula stays the upper bound and the tests cross-check both.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

from veil.psi.errors import InputError

__all__ = ["NoiseSpec", "coins_for", "coins_pld", "lattice_shift", "noise_spec", "pld_delta"]

TARGET_UNITS = 8
"""Largest sensitivity, in lattice units, before the aggregate is rounded to a coarser lattice."""
MAX_COINS = 20_000_000
"""Refuse budgets that need more coins than this per aggregate (inputs of ~160 MB per party)."""


@dataclass(frozen=True)
class NoiseSpec:
    """The noise of one released aggregate and what it buys."""

    sensitivity: int
    shift: int
    """The aggregate is released on the lattice q = 2^shift."""
    units: int
    """Sensitivity in lattice units (Δ)."""
    coins: int
    """N: the noise is q·(Bin(N, 1/2) - N/2)."""
    epsilon: float
    delta: float

    @property
    def quantum(self) -> int:
        return 1 << self.shift

    @property
    def sd(self) -> float:
        """Standard deviation of the noise in the aggregate's own units: q·√N/2."""
        return self.quantum * math.sqrt(self.coins) / 2


def lattice_shift(sensitivity: int) -> int:
    """Smallest shift with sensitivity / 2^shift <= TARGET_UNITS (0: no rounding)."""
    if sensitivity < 1:
        raise InputError(f"sensitivity must be >= 1, got {sensitivity}")
    shift = 0
    while sensitivity > TARGET_UNITS << shift:
        shift += 1
    return shift


def coins_for(units: int, epsilon: float, delta: float) -> int:
    """Spec §9: N = ⌈8·Δ²·ln(2/δ)/ε²⌉, rounded up to an even number."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InputError(f"epsilon must be finite and > 0, got {epsilon!r}")
    if not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta!r}")
    n = math.ceil(8 * units * units * math.log(2 / delta) / (epsilon * epsilon))
    return n + (n % 2)


@functools.lru_cache(maxsize=256)
def coins_pld(units: int, epsilon: float, delta: float) -> int:
    """Smallest even N <= the spec's formula with pld_delta(N, units, epsilon) <= delta."""
    hi = coins_for(units, epsilon, delta)
    if hi > MAX_COINS or pld_delta(hi, units, epsilon) > delta:
        return hi  # the formula's own guarantee (spec §9); refused above MAX_COINS
    lo = 0  # invariant: lo fails (or is 0), hi meets delta
    while hi - lo > 2:
        mid = (lo + hi) // 2
        mid += mid % 2
        if pld_delta(mid, units, epsilon) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def noise_spec(sensitivity: int, epsilon: float, delta: float) -> NoiseSpec:
    """The lattice and coin count that make one aggregate (epsilon, delta)-DP."""
    shift = lattice_shift(sensitivity)
    units = sensitivity if shift == 0 else (sensitivity >> shift) + 1
    coins = coins_pld(units, epsilon, delta)
    if coins > MAX_COINS:
        raise InputError(
            f"epsilon={epsilon:g}, delta={delta:g} need {coins} shared coins per aggregate "
            f"(more than {MAX_COINS}); raise epsilon or delta, or measure fewer metrics")
    return NoiseSpec(sensitivity, shift, units, coins, epsilon, delta)


def pld_delta(coins: int, units: int, epsilon: float) -> float:
    """Exact δ(ε) of count + (Bin(N, 1/2) - N/2) against count + Δ, by dp-accounting's PLD.

    The support is cut at 14 standard deviations from the mean (mass below 1e-40), added to the
    result so the answer stays an upper bound.
    """
    import numpy as np
    from dp_accounting.pld import privacy_loss_distribution as pld
    from scipy.special import gammaln
    from scipy.stats import binom

    sd = math.sqrt(coins) / 2
    lo = max(0, math.floor(coins / 2 - 14 * sd))
    hi = min(coins, math.ceil(coins / 2 + 14 * sd))
    k = np.arange(lo, hi + 1, dtype=np.float64)
    logp = gammaln(coins + 1.0) - gammaln(k + 1.0) - gammaln(coins - k + 1.0) \
        - coins * math.log(2.0)
    base = {int(x): float(v) for x, v in zip(k, logp, strict=True)}
    shifted = {x + units: v for x, v in base.items()}
    tail = 2.0 * float(binom.cdf(lo - 1, coins, 0.5)) if lo > 0 else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dist = pld.from_two_probability_mass_functions(
            base, shifted, pessimistic_estimate=True, value_discretization_interval=1e-4)
        return float(dist.get_delta_for_epsilon(epsilon)) + tail
