"""The audit's ground truth: the attacker's target set X and which of it the victim holds.

Items are distinct positive integers, as in AnonPSI's `gen_dummy_set`: the integer is the id and
also the item's value for PSI-SUM (TreeSumExplorer's setting). For k ID columns every member
matches its victim record on exactly one column, spread evenly, so the cascade has work in every
round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veil.psi.errors import AuditError


@dataclass(frozen=True)
class Population:
    """X (indices 0..n-1 are what attacks and oracles talk about) and the hidden membership."""

    values: np.ndarray
    """int64, distinct, >= 1: item i's id and its value."""
    member: np.ndarray
    """bool: X_i is in Y."""
    column: np.ndarray
    """int64: the ID column on which member i matches its victim record; -1 for non-members."""
    k: int
    outside: int
    """|Y \\ X|: victim rows the attacker never targets (they matter for N and faithful runs)."""

    @property
    def n(self) -> int:
        return int(self.values.size)

    @property
    def victim_rows(self) -> int:
        return int(self.member.sum()) + self.outside


def make_population(
    n_x: int, n_y: int, intersection: int, *, k: int = 1, dense: int = 2,
    rng: np.random.Generator,
) -> Population:
    """Random X and Y with |X ∩ Y| = intersection, items drawn from 1..(n_x + n_y)·dense."""
    for name, value, low in (("|X|", n_x, 1), ("|Y|", n_y, 1), ("intersection", intersection, 0),
                             ("k", k, 1), ("dense", dense, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise AuditError(f"{name} must be an integer >= {low}, got {value!r}")
    if intersection > min(n_x, n_y):
        raise AuditError(f"intersection {intersection} exceeds min(|X|, |Y|) = {min(n_x, n_y)}")
    if k > 8:
        raise AuditError(f"k must be at most 8 ID columns for the audit, got {k}")
    universe = (n_x + n_y) * dense
    values = rng.choice(universe, size=n_x, replace=False).astype(np.int64) + 1
    member = np.zeros(n_x, dtype=bool)
    member[rng.choice(n_x, size=intersection, replace=False)] = True
    column = np.full(n_x, -1, dtype=np.int64)
    hits = np.flatnonzero(member)
    column[rng.permutation(hits)] = np.arange(hits.size) % k
    return Population(values, member, column, k, n_y - intersection)
