"""What one protocol run tells the attacker about its chosen subset X' ⊆ X (spec §10 harness).

An oracle answers `query(subset)` (indices into the population) with an `Observation`: the
sizes the protocol reveals, the attacker's de-biased count, and for PSI-SUM a sum. Oracles
count their calls. The DPCA-PSI noise is never re-implemented here: sampling mode draws each
round's dummy matches as the overlap of two `session.choose_common` draws (the protocol's own
code), and faithful mode runs the real protocol in memory (`run_local`).
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Protocol

import numpy as np

from veil.psi.audit.population import Population
from veil.psi.errors import AuditError
from veil.psi.estimate import dummy_noise
from veil.psi.groups import RandomBytes
from veil.psi.session import choose_common

__all__ = [
    "DpcaFaithful", "DpcaSampling", "MultiIdEcdh", "Observation", "Oracle", "PlainEcdh",
    "ReferenceMasking", "SumOracle", "binomial_trials", "dpca_noise",
]


@dataclass(frozen=True)
class Observation:
    """One run as the attacker sees it."""

    sizes: tuple[int, ...]
    """What the protocol reveals: per-round sizes (DPCA), or per-ID-subset sizes (multi-ID)."""
    count: float
    """The attacker's best estimate of |X' ∩ Y| (the public dummy bias k·tau/2 removed)."""
    total: float | None = None
    """PSI-SUM / PPAM: the (possibly noisy) sum of values over X' ∩ Y."""
    linked: frozenset[int] | None = None
    """Reference masking only: the rows of X' the owner links to returned ciphertexts."""


class Oracle(Protocol):
    """One protocol, as seen by an attacker choosing its own input subset per run."""

    name: str
    calls: int

    def query(self, subset: np.ndarray) -> Observation: ...


def _check_subset(pop: Population, subset: np.ndarray) -> np.ndarray:
    idx = np.asarray(subset, dtype=np.int64)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= pop.n)):
        raise AuditError("an oracle query must be a 1-d array of indices into X")
    if np.unique(idx).size != idx.size:
        raise AuditError("an oracle query must not repeat an index (PSI inputs are sets)")
    return idx


def dpca_noise(k: int, tau: int, random_bytes: RandomBytes) -> np.ndarray:
    """H_1..H_k: each round's dummy matches, the overlap of both parties' common-pool draws."""
    if tau == 0:
        return np.zeros(k, dtype=np.int64)
    return np.array([
        np.intersect1d(choose_common(tau, random_bytes), choose_common(tau, random_bytes),
                       assume_unique=True).size
        for _ in range(k)
    ], dtype=np.int64)


def _round_counts(pop: Population, idx: np.ndarray) -> np.ndarray:
    """Real matches per cascade round: member rows by the column they match on."""
    cols = pop.column[idx]
    return np.bincount(cols[cols >= 0], minlength=pop.k).astype(np.int64)


@dataclass
class PlainEcdh:
    """Single-ID ECDH-PSI (cardinality): |X' ∩ Y| exactly, every call."""

    pop: Population
    name: str = "ECDH-PSI"
    calls: int = 0

    def query(self, subset: np.ndarray) -> Observation:
        idx = _check_subset(self.pop, subset)
        self.calls += 1
        c = int(self.pop.member[idx].sum())
        return Observation((c,), float(c))


@dataclass
class MultiIdEcdh:
    """Multi-ID ECDH-PSI without the cascade: the sizes over every non-empty set of ID columns.

    Records match on a column set S when they agree on every column of S; the 2^k - 1 sizes are
    exact. The count is the records matching on any column.
    """

    pop: Population
    name: str = "multi-ID ECDH-PSI"
    calls: int = 0

    def query(self, subset: np.ndarray) -> Observation:
        idx = _check_subset(self.pop, subset)
        self.calls += 1
        cols = self.pop.column[idx]
        sizes = []
        for r in range(1, self.pop.k + 1):
            for s in combinations(range(self.pop.k), r):
                # each member agrees with its record on exactly one column
                sizes.append(int(np.isin(cols, s).sum()) if r == 1 else 0)
        c = int((cols >= 0).sum())
        return Observation(tuple(sizes), float(c))


@dataclass
class DpcaSampling:
    """DPCA-PSI, sampling mode: m_c = real_c + H_c with H_c from the session's dummy draw."""

    pop: Population
    tau: int
    random_bytes: RandomBytes = os.urandom
    name: str = "DPCA-PSI"
    calls: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.tau <= 2**20:
            raise AuditError(f"tau must be in [0, 2^20], got {self.tau}")

    def query(self, subset: np.ndarray) -> Observation:
        idx = _check_subset(self.pop, subset)
        self.calls += 1
        sizes = _round_counts(self.pop, idx) + dpca_noise(self.pop.k, self.tau, self.random_bytes)
        bias = self.pop.k * dummy_noise(self.tau)[0]
        return Observation(tuple(int(s) for s in sizes), float(sizes.sum()) - bias)


def _id(tag: str, row: int, col: int) -> bytes:
    return f"{tag}{row}c{col}".encode()


@dataclass
class DpcaFaithful:
    """DPCA-PSI through the real protocol (`run_local`, both parties in one process).

    The attacker is the sender with X'; the victim holds Y (its members of X plus `outside`
    rows). Costly (every row hashed and exponentiated), so for small sizes only.
    """

    pop: Population
    tau: int
    group: str = "ristretto255"
    random_bytes: RandomBytes = os.urandom
    name: str = "DPCA-PSI (faithful)"
    calls: int = 0
    _victim: list[list[bytes]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.tau <= 2**20:
            raise AuditError(f"tau must be in [0, 2^20], got {self.tau}")
        k = self.pop.k
        victim: list[list[bytes]] = [[] for _ in range(k)]
        for i in np.flatnonzero(self.pop.member):
            for c in range(k):
                victim[c].append(_id("m" if c == self.pop.column[i] else "y", int(i), c))
        for j in range(self.pop.outside):
            for c in range(k):
                victim[c].append(_id("o", j, c))
        self._victim = victim

    def _attacker_ids(self, idx: np.ndarray) -> list[list[bytes]]:
        return [[_id("m" if c == self.pop.column[i] else "x", int(i), c) for i in idx]
                for c in range(self.pop.k)]

    def query(self, subset: np.ndarray) -> Observation:
        from veil.psi.local import run_local
        from veil.psi.session import PartyData, PsiConfig, PsiParty

        idx = _check_subset(self.pop, subset)
        if idx.size == 0:
            raise AuditError("the faithful oracle needs a non-empty subset (an empty input "
                             "is not a protocol run)")
        self.calls += 1
        dp = self.tau > 0
        tau = self.tau if dp else None
        sender = PsiParty(PsiConfig(role="sender", group=self.group, input_dp=dp, tau=tau),
                          PartyData(self._attacker_ids(idx)), random_bytes=self.random_bytes)
        receiver = PsiParty(PsiConfig(role="receiver", group=self.group, input_dp=dp, tau=tau),
                            PartyData(self._victim), random_bytes=self.random_bytes)
        result, _ = run_local(sender, receiver)
        bias = self.pop.k * dummy_noise(result.tau)[0]
        return Observation(result.round_sizes, float(result.intersection_size) - bias)


@dataclass
class ReferenceMasking:
    """DPCA-PSI as the reference masks payloads: c' = c·(1 + n·r), not re-randomised (§12.1).

    c' ≡ c (mod n), so the owner of the features links every returned ciphertext to its own
    row: it learns exactly which rows of X' matched, and, knowing its dummies, cancels the
    noise. Sampling mode only: Veil's protocol re-randomises, so it cannot run this leak.
    """

    pop: Population
    tau: int
    random_bytes: RandomBytes = os.urandom
    name: str = "DPCA-PSI, reference masking"
    calls: int = 0

    def query(self, subset: np.ndarray) -> Observation:
        idx = _check_subset(self.pop, subset)
        self.calls += 1
        sizes = _round_counts(self.pop, idx) + dpca_noise(self.pop.k, self.tau, self.random_bytes)
        linked = frozenset(int(i) for i in idx[self.pop.member[idx]])
        return Observation(tuple(int(s) for s in sizes), float(len(linked)), linked=linked)


def binomial_trials(epsilon: float, delta: float, sensitivity: float) -> int:
    """MPC-DualDP's coin count N_b = ceil(8·s²·ln(2/delta)/epsilon²) (spec §9)."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise AuditError(f"epsilon must be finite and > 0, got {epsilon!r}")
    if not 0 < delta < 1:
        raise AuditError(f"delta must be in (0, 1), got {delta!r}")
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise AuditError(f"sensitivity must be finite and > 0, got {sensitivity!r}")
    return math.ceil(8.0 * sensitivity * sensitivity * math.log(2.0 / delta) / epsilon**2)


def _secret_rng() -> np.random.Generator:
    return np.random.default_rng(secrets.randbits(128))


@dataclass
class SumOracle:
    """PSI-SUM: the count and the sum of values over X' ∩ Y.

    `tau = None`: ECDH-PSI-SUM, exact count. `tau` given: DPCA-PSI + PPAM, the count is
    DPCA-noisy and the sum is exact (a zero column neutralises the dummies, spec §8), unless
    `dualdp = (epsilon, delta)` per call adds MPC-DualDP's centred binomial
    Bin(N_b, 1/2) - N_b/2 with sensitivity the largest value. The binomial comes from numpy's
    Generator seeded by `secrets`: fine for an attack simulation, which releases nothing.
    """

    pop: Population
    tau: int | None = None
    dualdp: tuple[float, float] | None = None
    random_bytes: RandomBytes = os.urandom
    rng: Callable[[], np.random.Generator] = _secret_rng
    name: str = "ECDH-PSI-SUM"
    calls: int = 0
    _trials: int = field(init=False, default=0)
    _gen: np.random.Generator | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if self.dualdp is not None:
            eps, delta = self.dualdp
            self._trials = binomial_trials(eps, delta, float(self.pop.values.max()))

    def query(self, subset: np.ndarray) -> Observation:
        idx = _check_subset(self.pop, subset)
        self.calls += 1
        hit = idx[self.pop.member[idx]]
        total = float(self.pop.values[hit].sum())
        if self._trials:
            if self._gen is None:
                self._gen = self.rng()
            total += float(self._gen.binomial(self._trials, 0.5)) - self._trials / 2
        if self.tau is None:
            return Observation((int(hit.size),), float(hit.size), total)
        sizes = _round_counts(self.pop, idx) + dpca_noise(self.pop.k, self.tau, self.random_bytes)
        bias = self.pop.k * dummy_noise(self.tau)[0]
        return Observation(tuple(int(s) for s in sizes), float(sizes.sum()) - bias, total)
