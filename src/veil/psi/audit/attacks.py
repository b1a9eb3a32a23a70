"""The membership attacks of AnonPSI (spec §10), written against the `Oracle` interface.

Every attack sees only X (its item values, which are public to the attacker) and an oracle it
may call at most `calls` times; it returns the members and non-members it declares. Counts
are the oracle's de-biased estimate, rounded and clamped to [0, |subset|]: the deterministic
attacks treat 0 and |subset| as certainty, so against a noisy oracle they make wrong
declarations, which the metrics count against them.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from veil.psi.audit.oracles import Observation, Oracle
from veil.psi.errors import AuditError

__all__ = ["ATTACKS", "AttackFn", "Inference", "act_bayesian", "baseline", "ciphertext_linkage",
           "dypathblazer", "improved", "sum_only", "tree_sum_explorer"]


@dataclass(frozen=True)
class Inference:
    """What an attack declares: members (Z_pos) and non-members (Z_neg) of X, by index."""

    positive: frozenset[int]
    negative: frozenset[int]
    calls: int


AttackFn = Callable[[np.ndarray, Oracle, int, np.random.Generator], Inference]


class _Budget:
    """Counts calls; an attack asks `left` before each query."""

    def __init__(self, oracle: Oracle, calls: int) -> None:
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise AuditError(f"calls must be a non-negative integer, got {calls!r}")
        self.oracle, self.calls, self.used = oracle, calls, 0

    @property
    def left(self) -> int:
        return self.calls - self.used

    def query(self, idx: np.ndarray) -> Observation:
        if self.used >= self.calls:
            raise AuditError("attack exceeded its call budget")  # a bug in an attack
        self.used += 1
        return self.oracle.query(idx)


def _count(obs: Observation, size: int) -> int:
    return int(min(max(round(obs.count), 0), size))


def _total(obs: Observation, full: float) -> float:
    if obs.total is None:
        raise AuditError("this attack needs a PSI-SUM oracle (an observation with a sum)")
    return float(min(max(round(obs.total), 0), full))


# -- tree walks: Guo et al. baseline and improved, sum-only, DyPathBlazer ----------------------


@dataclass
class _Node:
    idx: np.ndarray
    m: float  # measured count (or sum)
    full: float  # |node| (or its total value)

    @property
    def density(self) -> float:
        return self.m / self.full if self.full else 0.0


def _tree_attack(
    values: np.ndarray, oracle: Oracle, calls: int, rng: np.random.Generator, *,
    extremes: bool, by_sum: bool,
    split: Callable[[_Node, int], int] | None = None,
) -> Inference:
    """Walk a random balanced tree over X, one call per split (the sibling by subtraction).

    `extremes=False` is Guo et al.'s baseline: priority = positive density, only count-0
    nodes are declared negative and positive leaves positive. `extremes=True` (improved,
    sum-only, DyPathBlazer) uses max(d, 1 - d) and declares every pure node.
    """
    budget = _Budget(oracle, calls)
    pos: set[int] = set()
    neg: set[int] = set()
    if calls == 0 or values.size == 0:
        return Inference(frozenset(), frozenset(), 0)

    def full(idx: np.ndarray) -> float:
        return float(values[idx].sum()) if by_sum else float(idx.size)

    def measure(idx: np.ndarray) -> float:
        obs = budget.query(idx)
        return _total(obs, full(idx)) if by_sum else float(_count(obs, idx.size))

    def settle(node: _Node) -> bool:
        if node.m <= 0:
            neg.update(int(i) for i in node.idx)
            return True
        if node.m >= node.full and (extremes or node.idx.size == 1):
            pos.update(int(i) for i in node.idx)
            return True
        return False

    def priority(node: _Node) -> float:
        d = node.density
        return max(d, 1.0 - d) if extremes else d

    tie = itertools.count()
    heap: list[tuple[float, int, _Node]] = []
    root = rng.permutation(values.size)
    first = _Node(root, measure(root), full(root))
    if not settle(first):
        heapq.heappush(heap, (-priority(first), next(tie), first))
    while budget.left > 0 and heap:
        node: _Node | None = heapq.heappop(heap)[2]
        while node is not None and budget.left > 0 and node.idx.size > 1:
            kq = split(node, budget.left) if split else node.idx.size // 2
            left_idx, right_idx = node.idx[:kq], node.idx[kq:]
            m_left = measure(left_idx)
            left = _Node(left_idx, m_left, full(left_idx))
            right_full = full(right_idx)
            right = _Node(right_idx, min(max(node.m - m_left, 0.0), right_full), right_full)
            open_nodes = [c for c in (left, right) if not settle(c)]
            if not open_nodes:
                node = None
                break
            node = max(open_nodes, key=priority)
            for other in open_nodes:
                if other is not node:
                    heapq.heappush(heap, (-priority(other), next(tie), other))
        if node is not None and node.idx.size > 1:  # calls ran out mid-walk
            heapq.heappush(heap, (-priority(node), next(tie), node))
        # an unsettled single element (a noisy sum between 0 and its value) stays unknown
    return Inference(frozenset(pos), frozenset(neg), budget.used)


def baseline(values: np.ndarray, oracle: Oracle, calls: int,
             rng: np.random.Generator) -> Inference:
    """Guo et al. (USENIX Sec'22): binary search toward the densest node."""
    return _tree_attack(values, oracle, calls, rng, extremes=False, by_sum=False)


def improved(values: np.ndarray, oracle: Oracle, calls: int,
             rng: np.random.Generator) -> Inference:
    """Guo et al., improved: priority max(d, 1 - d); pure positive and negative nodes."""
    return _tree_attack(values, oracle, calls, rng, extremes=True, by_sum=False)


def sum_only(values: np.ndarray, oracle: Oracle, calls: int,
             rng: np.random.Generator) -> Inference:
    """The improved walk using only sums: density = intersection sum / node total."""
    return _tree_attack(values, oracle, calls, rng, extremes=True, by_sum=True)


_PLAN_MAX = 24
"""Largest node DyPathBlazer plans for exactly (the table costs ~n^5); larger nodes halve."""


@functools.cache
def _free(n: int, c: int) -> int:
    return n if c in (0, n) else 0


@functools.cache
def _hyp(n: int, c: int, k: int, i: int) -> float:
    return math.comb(c, i) * math.comb(n - c, k - i) / math.comb(n, k)


@functools.cache
def plan(n: int, c: int, t: int) -> tuple[float, int]:
    """(expected memberships resolved, best split size K) for a node of n with c members, t calls.

    A call on a K-subset holding i members (hypergeometric) splits the node; the walk then
    continues down one child with t - 1 calls, the other child resolving only if pure.
    """
    if c in (0, n):
        return float(n), 0
    t = min(t, n)  # more calls than elements never help a path
    if t == 0 or n < 2:
        return 0.0, 0
    best = (0.0, n // 2)
    for k in range(1, n // 2 + 1):
        e = 0.0
        for i in range(max(0, c - (n - k)), min(c, k) + 1):
            a, b = plan(k, i, t - 1)[0], plan(n - k, c - i, t - 1)[0]
            e += _hyp(n, c, k, i) * max(a + _free(n - k, c - i), b + _free(k, i))
        if e > best[0] + 1e-12:
            best = (e, k)
    return best


def dypathblazer(values: np.ndarray, oracle: Oracle, calls: int,
                 rng: np.random.Generator) -> Inference:
    """DyPathBlazer: the improved walk with split sizes from an offline dynamic programme."""

    def split(node: _Node, left: int) -> int:
        n = int(node.idx.size)
        if n > _PLAN_MAX:
            return n // 2
        return plan(n, int(node.m), left)[1] or n // 2

    return _tree_attack(values, oracle, calls, rng, extremes=True, by_sum=False, split=split)


# -- TreeSumExplorer ---------------------------------------------------------------------------


def _subsets(vals: np.ndarray, count: int, total: int, budget: int,
             cap: int = 256) -> list[np.ndarray] | None:
    """Every count-subset of vals (positions) summing to total; None when over budget or cap."""
    order = np.argsort(vals, kind="stable")
    arr = [int(v) for v in vals[order]]
    n = len(arr)
    prefix = [0, *itertools.accumulate(arr)]
    found: list[np.ndarray] = []
    steps = 0
    chosen: list[int] = []

    def walk(start: int, need: int, left: int) -> bool:
        nonlocal steps
        steps += 1
        if steps > budget or len(found) > cap:
            return False
        if left == 0:
            if need == 0:
                found.append(order[np.array(chosen, dtype=np.int64)])
            return True
        for i in range(start, n - left + 1):
            low = prefix[i + left] - prefix[i]  # the `left` smallest from i on
            high = prefix[n] - prefix[n - left]  # the `left` largest overall
            if low > need:
                break
            if high < need:
                return True
            chosen.append(i)
            ok = walk(i + 1, need - arr[i], left - 1)
            chosen.pop()
            if not ok:
                return False
        return True

    if count < 0 or count > n:
        return []
    return found if walk(0, total, count) else None


def tree_sum_explorer(values: np.ndarray, oracle: Oracle, calls: int,
                      rng: np.random.Generator, *, compute_budget: int = 20_000) -> Inference:
    """TreeSumExplorer (PSI-SUM, value = id): solve N-SUM offline, query a candidate to split.

    A node (count C, sum S) whose C-subsets summing to S are unique is resolved for free; with
    several candidates the first is queried, splitting the node in two; a node too large to
    enumerate within `compute_budget` steps is halved by one call.
    """
    budget = _Budget(oracle, calls)
    pos: set[int] = set()
    neg: set[int] = set()
    if calls == 0 or values.size == 0:
        return Inference(frozenset(), frozenset(), 0)

    def query(idx: np.ndarray) -> tuple[int, int]:
        obs = budget.query(idx)
        return _count(obs, idx.size), int(_total(obs, float(values[idx].sum())))

    tie = itertools.count()
    heap: list[tuple[float, int, np.ndarray, int, int, list[np.ndarray] | None]] = []

    def push(idx: np.ndarray, c: int, s: int) -> None:
        if c <= 0 or s <= 0:
            neg.update(int(i) for i in idx)
            return
        if c >= idx.size:
            pos.update(int(i) for i in idx)
            return
        cands = _subsets(values[idx], c, s, compute_budget)
        if cands is not None and len(cands) == 0:
            return  # inconsistent observation (noise): give the node up
        if cands is not None and len(cands) == 1:
            inside = idx[cands[0]]
            pos.update(int(i) for i in inside)
            neg.update(int(i) for i in np.setdiff1d(idx, inside))
            return
        size = float(idx.size)
        if cands is None:
            prio = size / 2
        elif len(cands) <= budget.left:
            prio = size
        else:
            prio = size * (1.0 - (1.0 - 1.0 / len(cands)) ** budget.left)
        heapq.heappush(heap, (-prio, next(tie), idx, c, s, cands))

    root = rng.permutation(values.size)
    push(root, *query(root))
    while budget.left > 0 and heap:
        _, _, idx, c, s, cands = heapq.heappop(heap)
        probe = idx[: idx.size // 2] if cands is None else idx[cands[0]]
        rest = np.setdiff1d(idx, probe)
        cq, sq = query(probe)
        push(probe, cq, sq)
        push(rest, min(max(c - cq, 0), rest.size), max(s - sq, 0))
    return Inference(frozenset(pos), frozenset(neg), budget.used)


# -- ActBayesian -------------------------------------------------------------------------------


def act_bayesian(values: np.ndarray, oracle: Oracle, calls: int, rng: np.random.Generator, *,
                 lower: float = 0.25, upper: float = 0.8, tolerance: float = 0.1,
                 sample_rate: float = 0.5) -> Inference:
    """ActBayesian: posterior membership per element, refined by querying random halves.

    The prior is one call on all of X; each round queries a random `sample_rate` share A of the
    most likely members, sets A's posterior to count/|A| and the held-out B's to the remaining
    expectation; posteriors >= upper snap to member, <= lower to non-member.
    """
    budget = _Budget(oracle, calls)
    n = values.size
    if calls == 0 or n == 0:
        return Inference(frozenset(), frozenset(), 0)
    everyone = np.arange(n)
    post = np.full(n, _count(budget.query(everyone), n) / n)

    def snap() -> None:
        post[post >= upper] = 1.0
        post[post <= lower] = 0.0

    snap()
    while budget.left > 0:
        open_ = np.flatnonzero((post > 0.0) & (post < 1.0))
        if open_.size == 0:
            break
        top = post[open_].max()
        sel = rng.permutation(open_[post[open_] >= top - tolerance])
        na = max(1, round(sel.size * sample_rate))
        a, b = sel[:na], sel[na:]
        expected = float(post[sel].sum())
        got = _count(budget.query(a), a.size)
        post[a] = got / a.size
        if b.size:
            post[b] = min(max((expected - got) / b.size, 0.0), 1.0)
        snap()
    return Inference(frozenset(int(i) for i in np.flatnonzero(post == 1.0)),
                     frozenset(int(i) for i in np.flatnonzero(post == 0.0)), budget.used)


# -- the reference implementation's ciphertext linkage (spec §12.1) -------------------------------


def ciphertext_linkage(values: np.ndarray, oracle: Oracle, calls: int,
                       rng: np.random.Generator) -> Inference:
    """One run on all of X; where returned ciphertexts link to own rows, membership is read off."""
    budget = _Budget(oracle, calls)
    if calls == 0 or values.size == 0:
        return Inference(frozenset(), frozenset(), 0)
    obs = budget.query(np.arange(values.size))
    if obs.linked is None:
        return Inference(frozenset(), frozenset(), budget.used)
    rest = frozenset(range(values.size)) - obs.linked
    return Inference(obs.linked, rest, budget.used)


ATTACKS: dict[str, tuple[AttackFn, str]] = {
    "guo-baseline": (baseline, "count"),
    "guo-improved": (improved, "count"),
    "dypathblazer": (dypathblazer, "count"),
    "actbayesian": (act_bayesian, "count"),
    "treesumexplorer": (tree_sum_explorer, "sum"),
    "sum-only": (sum_only, "sum"),
    "ciphertext-linkage": (ciphertext_linkage, "linked"),
}
"""name -> (attack, the observation it needs: a count, a sum, or linked rows)."""
