"""Cross-identifier linkage: can a party tell whether two of its victim's ids sit on one record?

The game (k = 2 ID columns). The attacker holds ids a (column 0) and b (column 1) and asks
whether the victim has ONE record (a, b) — "linked" — or two records (a, ·) and (·, b). Both
worlds have the same number of victim rows (the row count is public).

- Multi-ID ECDH-PSI revealing the 2^k - 1 per-column-set sizes: probe with the record (a, b);
  the size over {0, 1} is 1 exactly when linked. Certain.
- The cascade without noise: probe with A = (a, x) and B = (x', b). Linked, the victim's record
  is used up in round 1 by A, so round 2 matches nothing (sizes 1, 0); unlinked, B matches (·, b)
  in round 2 (sizes 1, 1). The cascade reveals the link through m_2 — a "Type-X"-style leak —
  and only the DP noise on m_2 protects it.
- DPCA-PSI: m_2 + H_2. The best any test can do from the sizes is the total-variation distance
  between H and H + 1, which the DP bound caps; the audit reports the empirical advantage of
  the likelihood-ratio test (guess "linked" when m_2 - τ/2 < 1/2), in sampling mode and through
  the real protocol. In faithful runs the attacker's other outputs (the victim's padded row
  count, the empty shares) are checked to be identical in both worlds, so the sizes are all that
  differ in what `run_local` returns.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from itertools import combinations

from veil.psi.audit.metrics import dp_bound
from veil.psi.audit.oracles import dpca_noise
from veil.psi.errors import AuditError
from veil.psi.groups import RandomBytes

__all__ = ["LinkageResult", "best_advantage", "linkage_test"]

_FILLER = 3
"""Unrelated rows on each side, so the probe is not the whole input."""


@dataclass(frozen=True)
class LinkageResult:
    """One observer of the linkage game: how often the attacker guessed the world right."""

    observer: str
    tau: int
    trials: int
    accuracy: float
    advantage: float
    """2·accuracy - 1 (0 = no better than a coin, 1 = always right)."""
    best_possible: float
    """The largest advantage any test on the revealed sizes can have."""
    bound: float | None
    """The DP bound for the (ε, δ) tau was chosen for; None when the observer has no DP claim."""


def _pmf(tau: int) -> list[float]:
    """P[H = h] for H ~ Hypergeometric(2τ, τ, τ): C(τ,h)² / C(2τ,τ), in logs for large τ."""
    lc = math.lgamma(2 * tau + 1) - 2 * math.lgamma(tau + 1)
    return [math.exp(2 * (math.lgamma(tau + 1) - math.lgamma(h + 1) - math.lgamma(tau - h + 1))
                     - lc) for h in range(tau + 1)]


def best_advantage(tau: int) -> float:
    """Total-variation distance between H and H + 1: the optimal test's advantage on m_2."""
    if tau == 0:
        return 1.0
    p = _pmf(tau)
    shifted = [0.0, *p]
    p = [*p, 0.0]
    return 0.5 * sum(abs(x - y) for x, y in zip(p, shifted, strict=True))


def _ids(tag: str, count: int, col: int) -> list[bytes]:
    return [f"{tag}{i}c{col}".encode() for i in range(count)]


def _worlds(linked: bool) -> tuple[list[list[bytes]], list[list[bytes]]]:
    """(attacker ids, victim ids), k = 2: the probe rows A = (a, x), B = (x', b) and fillers."""
    attacker = [[b"a", b"x0", *_ids("f", _FILLER, 0)], [b"x1", b"b", *_ids("f", _FILLER, 1)]]
    if linked:
        victim = [[b"a", b"p0", *_ids("g", _FILLER, 0)], [b"b", b"p1", *_ids("g", _FILLER, 1)]]
    else:
        victim = [[b"a", b"z", *_ids("g", _FILLER, 0)], [b"y", b"b", *_ids("g", _FILLER, 1)]]
    return attacker, victim


def _subset_sizes(mine: list[list[bytes]],
                  theirs: list[list[bytes]]) -> dict[tuple[int, ...], int]:
    """What plain multi-ID PSI reveals: per non-empty column set S, |X_S ∩ Y_S| of projections."""
    k = len(mine)
    out = {}
    for r in range(1, k + 1):
        for cols in combinations(range(k), r):
            x = {tuple(mine[c][i] for c in cols) for i in range(len(mine[0]))}
            y = {tuple(theirs[c][i] for c in cols) for i in range(len(theirs[0]))}
            out[cols] = len(x & y)
    return out


def _guess_linked(sizes: tuple[int, ...], tau: int) -> bool:
    return sizes[1] - tau / 2 < 0.5


def _faithful(linked: bool, tau: int, random_bytes: RandomBytes) -> tuple[tuple[int, ...], int]:
    from veil.psi.local import run_local
    from veil.psi.session import PartyData, PsiConfig, PsiParty

    attacker, victim = _worlds(linked)
    dp = tau > 0
    cfg_s = PsiConfig(role="sender", input_dp=dp, tau=tau if dp else None)
    cfg_r = PsiConfig(role="receiver", input_dp=dp, tau=tau if dp else None)
    result, _ = run_local(PsiParty(cfg_s, PartyData(attacker), random_bytes=random_bytes),
                          PsiParty(cfg_r, PartyData(victim), random_bytes=random_bytes))
    if result.shares.size:
        raise AuditError("the linkage probe unexpectedly produced payload shares")
    return result.round_sizes, result.peer_rows


def linkage_test(tau: int, *, epsilon: float | None, delta: float, trials: int = 2000,
                 faithful_trials: int = 10,
                 random_bytes: RandomBytes = os.urandom) -> list[LinkageResult]:
    """Play the game against each observer; `trials` per world in sampling mode."""
    if not 0 <= tau <= 2**20:
        raise AuditError(f"tau must be in [0, 2^20], got {tau}")
    if trials < 1 or faithful_trials < 0:
        raise AuditError("trials must be >= 1 and faithful trials >= 0")
    bound = dp_bound(epsilon, delta) if epsilon is not None else None
    right = 0
    for world in (True, False):
        victim = _worlds(world)[1]
        per_set = _subset_sizes([[b"a"], [b"b"]], victim)  # probe: the single record (a, b)
        right += (per_set[(0, 1)] >= 1) == world
    out = [LinkageResult("multi-ID ECDH-PSI (2^k sizes)", 0, 2, right / 2, right - 1.0, 1.0,
                         None)]
    plain_sizes = {linked: _faithful(linked, 0, random_bytes)[0] for linked in (True, False)}
    right = sum(_guess_linked(plain_sizes[w], 0) == w for w in (True, False))
    out.append(LinkageResult("cascade without DP (real protocol)", 0, 2, right / 2,
                             right - 1.0, 1.0, None))
    right = 0
    for world in (True, False):
        real = (1, 0) if world else (1, 1)
        for _ in range(trials):
            noise = dpca_noise(2, tau, random_bytes)
            sizes = (real[0] + int(noise[0]), real[1] + int(noise[1]))
            right += _guess_linked(sizes, tau) == world
    acc = right / (2 * trials)
    best = best_advantage(tau)
    out.append(LinkageResult("DPCA-PSI cascade (sampling)", tau, 2 * trials, acc, 2 * acc - 1,
                             best, bound))
    if faithful_trials:
        right = 0
        peer_rows = set()
        for world in (True, False):
            for _ in range(faithful_trials):
                got, rows = _faithful(world, tau, random_bytes)
                peer_rows.add(rows)
                right += _guess_linked(got, tau) == world
        if len(peer_rows) != 1:
            raise AuditError("the two worlds differ in the victim's padded row count")
        acc = right / (2 * faithful_trials)
        out.append(LinkageResult("DPCA-PSI cascade (real protocol)", tau, 2 * faithful_trials,
                                 acc, 2 * acc - 1, best, bound))
    return out
