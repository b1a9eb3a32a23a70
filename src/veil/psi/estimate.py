"""What the noisy sizes of a run say about the true intersection (spec §4, IntersectMask).

Each party appends k·tau dummy rows; block c of them holds tau of the 2·tau common-pool IDs in
column c, chosen independently by each party. So round c (column c) reveals
m_c = real_c + H_c with H_c ~ Hypergeometric(2·tau, tau, tau): mean tau/2, variance
tau^2 / (4·(2·tau - 1)), independent across rounds. The bias k·tau/2 is public, so
m - k·tau/2 is an unbiased estimate of the real intersection; the interval uses the normal
approximation of the sum of k such variables (fine for tau >= ~20; exact when tau = 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class RoundEstimate:
    """One round: the revealed count, the expected dummy matches in it and their spread."""

    noisy: int
    expected_dummies: float
    sd: float

    @property
    def estimate(self) -> float:
        return self.noisy - self.expected_dummies


@dataclass(frozen=True)
class Estimate:
    """The de-biased intersection size with a ~95% interval (clipped at 0)."""

    tau: int
    rounds: tuple[RoundEstimate, ...]
    noisy: int
    expected_dummies: float
    sd: float
    estimate: float
    low: float
    high: float


def dummy_noise(tau: int) -> tuple[float, float]:
    """(mean, standard deviation) of the dummy matches in one round."""
    if tau <= 0:
        return 0.0, 0.0
    return tau / 2, math.sqrt(tau * tau / (4 * (2 * tau - 1)))


def estimate(round_sizes: Sequence[int], tau: int, z: float = Z_95) -> Estimate:
    """De-bias the revealed round sizes of one run (k = len(round_sizes))."""
    mean, sd = dummy_noise(tau)
    rounds = tuple(RoundEstimate(int(m), mean, sd) for m in round_sizes)
    noisy = sum(int(m) for m in round_sizes)
    expected = mean * len(rounds)
    total_sd = sd * math.sqrt(len(rounds))
    value = noisy - expected
    return Estimate(tau, rounds, noisy, expected, total_sd, value,
                    max(0.0, value - z * total_sd), max(0.0, value + z * total_sd))
