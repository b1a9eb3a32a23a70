"""Scoring an attack against the truth (spec §10): correctness, not the count of declarations.

Leakage = correct declarations / |X| (split into members and non-members found), precision =
correct / declared. The membership advantage is (correct - wrong) / |X|: it is 2·accuracy - 1
for an attacker who guesses the undeclared records by a fair coin, and (ε, δ)-DP bounds it by
(e^ε - 1 + 2δ) / (e^ε + 1) when members are half of X.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from veil.psi.audit.attacks import Inference
from veil.psi.errors import AuditError

__all__ = ["Score", "dp_bound", "score"]


@dataclass(frozen=True)
class Score:
    """One attack run, scored. Fractions are of |X|."""

    leakage: float
    positive: float
    """Members correctly declared members, / |X|."""
    negative: float
    """Non-members correctly declared non-members, / |X|."""
    precision: float
    """Correct / declared (1.0 when nothing was declared)."""
    advantage: float
    declared: int
    wrong: int


def score(inference: Inference, member: np.ndarray) -> Score:
    """Score an inference against the hidden membership vector of X."""
    n = int(member.size)
    if n == 0:
        raise AuditError("cannot score an empty X")
    pos = np.fromiter(inference.positive, dtype=np.int64, count=len(inference.positive))
    neg = np.fromiter(inference.negative, dtype=np.int64, count=len(inference.negative))
    if np.intersect1d(pos, neg).size:
        raise AuditError("an attack declared a record both member and non-member")
    right_pos = int(member[pos].sum())
    right_neg = int((~member[neg]).sum())
    declared = int(pos.size + neg.size)
    correct = right_pos + right_neg
    wrong = declared - correct
    return Score(
        leakage=correct / n, positive=right_pos / n, negative=right_neg / n,
        precision=correct / declared if declared else 1.0,
        advantage=(correct - wrong) / n, declared=declared, wrong=wrong,
    )


def dp_bound(epsilon: float, delta: float) -> float:
    """Largest membership advantage (ε, δ)-DP allows at a fair prior: (e^ε - 1 + 2δ)/(e^ε + 1)."""
    if not epsilon > 0 or not 0 <= delta < 1:
        raise AuditError(f"need epsilon > 0 and 0 <= delta < 1, got ({epsilon!r}, {delta!r})")
    if math.isinf(epsilon):
        return 1.0
    return min(1.0, (math.expm1(epsilon) + 2.0 * delta) / (math.exp(epsilon) + 1.0))
