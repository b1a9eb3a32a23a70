"""`measure`: one party's side of a PPAM run, from its share table to the noisy report.

The publisher is rank 0, the advertiser rank 1. The measurement budget is charged before the
engine starts and stays charged if the run then fails (the peer may already have learned
something). `plain_aggregates` is the plaintext model of the same computation, for tests and
for checking the MPC against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from veil.psi.budget import MeasurementBudget
from veil.psi.errors import InputError
from veil.psi.ppam.engine import (
    EngineResult,
    LinkTls,
    WorkerJob,
    default_mpc_python,
    run_engine,
)
from veil.psi.ppam.plan import Aggregate, MeasurePlan

__all__ = ["Estimate", "MeasureReport", "ShareTable", "measure", "plain_aggregates",
           "read_share_table", "report"]

Role = Literal["publisher", "advertiser"]
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class ShareTable:
    """One party's output of `veil psi run`: column names, uint64 shares, tau, zero columns."""

    names: tuple[str, ...]
    shares: np.ndarray
    tau: int = 0
    """-1: the file does not record tau, so dummy rows cannot be ruled out."""
    zero_columns: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.shares.shape[0])


def read_share_table(path: Path) -> ShareTable:
    """A share CSV written by `veil psi run` (its header line gives tau and the zero column)."""
    from veil.psi.inputs import load_share_file

    tau, zeros, header, rows = load_share_file(path)
    shares = np.array(rows, dtype=np.uint64).reshape(len(rows), len(header))
    return ShareTable(tuple(header), shares, tau if tau is not None else -1, tuple(zeros))


def plain_aggregates(plan: MeasurePlan, names: tuple[str, ...],
                     values: np.ndarray) -> dict[str, int]:
    """The exact aggregates in the clear (values = reconstructed uint64 rows), no noise."""
    x = values.astype(np.uint64).view(np.int64)

    def col(name: str | None) -> np.ndarray:
        assert name is not None
        return x[:, names.index(name)]

    n = x.shape[0]
    c = plan.columns
    real = col(c.real) != 0 if c.real else np.ones(n, dtype=bool)
    with np.errstate(over="ignore"):
        d = col(c.conversion_time) - col(c.impression_time)
    attr = real & (d > 0) & (d <= plan.window)
    v = np.clip(col(c.value), 0, plan.cap) if c.value else np.zeros(n, np.int64)
    kinds = {"users": real.astype(np.int64), "conversions": attr.astype(np.int64),
             "value": attr * v, "value_sq": attr * v * v}
    out: dict[str, int] = {}
    for agg in plan.aggregates():
        mask = np.ones(n, dtype=bool)
        if agg.campaign is not None:
            mask &= col(c.campaign) == agg.campaign
        if agg.group is not None:
            test = col(c.group) != 0
            mask &= test if agg.group == "test" else ~test
        out[agg.name] = int(kinds[agg.kind][mask].sum())
    return out


@dataclass(frozen=True)
class Estimate:
    """A released or derived figure with its ~95% interval (DP noise, plus sampling for lift)."""

    value: float
    sd: float
    low: float
    high: float

    @classmethod
    def of(cls, value: float, sd: float) -> Estimate:
        return cls(value, sd, value - _Z95 * sd, value + _Z95 * sd)


@dataclass(frozen=True)
class MeasureReport:
    role: Role
    told: bool
    """False for the party that the plan does not reveal the result to."""
    epsilon: float
    delta: float
    window: int
    cap: int
    aggregates: dict[str, Estimate] = field(default_factory=dict)
    """Every released noisy aggregate (name → value ± noise)."""
    campaigns: dict[str, dict[str, Estimate | None]] = field(default_factory=dict)
    """Per campaign: conversions, value and, with lift, rates and lifts (None: not estimable)."""
    noise: dict[str, dict[str, float | int]] = field(default_factory=dict)
    stats: dict[str, float | int | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    role: Role,
    table: ShareTable,
    plan: MeasurePlan,
    *,
    listen: str,
    peer: str,
    peer_fingerprint: str,
    dataset: str,
    budget: MeasurementBudget,
    budget_limit: float,
    tls: LinkTls | None,
    mpc_python: Path | None = None,
    timeout_s: float = 600.0,
    on_phase: Callable[[str], None] | None = None,
) -> MeasureReport:
    """Charge (ε) to the measurement budget, run the MPC with the peer, return the report.

    `tls` pins the MPC link to the PSI certificates (None only for in-process tests): the
    budget is charged to `peer_fingerprint`, which must be that pinned certificate's.
    """
    check_table(plan, table)
    rank: Literal[0, 1] = 0 if role == "publisher" else 1
    addresses = (listen, peer) if rank == 0 else (peer, listen)
    reveal_to: Literal["both", 0, 1] = (
        "both" if plan.reveal_to == "both" else (0 if plan.reveal_to == "publisher" else 1))
    job = WorkerJob(rank=rank, addresses=addresses, plan=plan.to_worker(), rows=table.rows,
                    columns=table.names, reveal_to=reveal_to, timeout_s=timeout_s, tls=tls)
    if not plan.exact:
        budget.charge(peer_fingerprint, dataset, plan.epsilon, budget_limit)
    result = run_engine(mpc_python or default_mpc_python(), job, table.shares, on_phase)
    return report(role, plan, result)


def check_table(plan: MeasurePlan, table: ShareTable) -> None:
    """Bad input is refused before anything is charged or sent."""
    if table.shares.dtype != np.uint64 or table.shares.ndim != 2 or \
            table.shares.shape[1] != len(table.names):
        raise InputError("the share table is malformed")
    if table.rows == 0:
        raise InputError("the share file has no rows (empty intersection): nothing to measure")
    for role, name in plan.columns.roles().items():
        if name and name not in table.names:
            raise InputError(f"the {role.replace('_', ' ')} column {name!r} is not in the share "
                             f"file (columns: {', '.join(table.names)})")
    if table.tau and not plan.columns.real:
        why = (f"the run added dummy rows (tau={table.tau})" if table.tau > 0
               else "the share file does not record tau, so dummy rows cannot be ruled out")
        raise InputError(
            f"{why}, whose features are random: name the "
            "zero column (non-zero on real rows) with --real, or re-run veil psi run with "
            "--zero-column")
    plan.check_rows(table.rows)


def report(role: Role, plan: MeasurePlan, result: EngineResult) -> MeasureReport:
    aggs = plan.aggregates()
    noise = {a.name: {"sd": a.noise.sd, "quantum": a.noise.quantum, "coins": a.noise.coins,
                      "epsilon": a.noise.epsilon, "delta": a.noise.delta,
                      "sensitivity": a.noise.sensitivity} for a in aggs}
    base = {"role": role, "epsilon": plan.epsilon, "delta": plan.delta, "window": plan.window,
            "cap": plan.cap, "noise": noise, "stats": dict(result.stats)}
    if result.values is None:
        return MeasureReport(told=False, **base)  # type: ignore[arg-type]
    if len(result.values) != len(aggs):
        raise InputError("the MPC engine returned the wrong number of aggregates")
    released = {a.name: Estimate.of(float(v * a.noise.quantum), a.noise.sd)
                for a, v in zip(aggs, result.values, strict=True)}
    return MeasureReport(told=True, aggregates=released,
                         campaigns=_derive(plan, aggs, released), **base)  # type: ignore[arg-type]


def _sum(parts: list[Estimate]) -> Estimate:
    return Estimate.of(sum(p.value for p in parts), math.sqrt(sum(p.sd ** 2 for p in parts)))


def _derive(plan: MeasurePlan, aggs: tuple[Aggregate, ...],
            released: dict[str, Estimate]) -> dict[str, dict[str, Estimate | None]]:
    """Per campaign totals and, with lift, rates and lifts (delta method: sampling + noise)."""
    out: dict[str, dict[str, Estimate | None]] = {}
    by: dict[tuple[int | None, str | None, str], Estimate] = {
        (a.campaign, a.group, a.kind): released[a.name] for a in aggs}
    for campaign in plan.campaigns or (None,):
        key = "all" if campaign is None else str(campaign)
        groups = ("test", "control") if plan.lift else (None,)
        row: dict[str, Estimate | None] = {}
        for kind in ("conversions", "value"):
            if kind in plan.metrics or plan.lift:
                row[kind] = _sum([by[(campaign, g, kind)] for g in groups])
        if plan.lift:
            row.update(_lift({g: {k: by[(campaign, g, k)] for k in
                                  ("users", "conversions", "value", "value_sq")}
                              for g in ("test", "control")}))
        out[key] = row
    return out


def _lift(cells: dict[str, dict[str, Estimate]]) -> dict[str, Estimate | None]:
    out: dict[str, Estimate | None] = {}
    rate: dict[str, tuple[float, float]] = {}
    mean: dict[str, tuple[float, float]] = {}
    for g, c in cells.items():
        n = c["users"].value
        out[f"{g}_users"] = c["users"]
        if n < 1:
            out[f"{g}_conversion_rate"] = out[f"{g}_value_per_user"] = None
            continue
        p = min(max(c["conversions"].value / n, 0.0), 1.0)
        var_p = p * (1 - p) / n + (c["conversions"].sd ** 2 + p * p * c["users"].sd ** 2) / n**2
        rate[g] = (p, var_p)
        out[f"{g}_conversion_rate"] = Estimate.of(p, math.sqrt(var_p))
        m = c["value"].value / n
        s2 = max(c["value_sq"].value / n - m * m, 0.0)
        var_m = s2 / n + (c["value"].sd ** 2 + m * m * c["users"].sd ** 2) / n**2
        mean[g] = (m, var_m)
        out[f"{g}_value_per_user"] = Estimate.of(m, math.sqrt(var_m))
    if "test" in rate and "control" in rate and rate["test"][0] > 0 and rate["control"][0] > 0:
        (pt, vt), (pc, vc) = rate["test"], rate["control"]
        log_r, sd = math.log(pt / pc), math.sqrt(vt / pt**2 + vc / pc**2)
        out["conversion_lift"] = Estimate(pt / pc - 1, (pt / pc) * sd,
                                          math.exp(log_r - _Z95 * sd) - 1,
                                          math.exp(log_r + _Z95 * sd) - 1)
    else:
        out["conversion_lift"] = None
    if "test" in mean and "control" in mean:
        (mt, vt), (mc, vc) = mean["test"], mean["control"]
        out["incremental_value_per_user"] = Estimate.of(mt - mc, math.sqrt(vt + vc))
    else:
        out["incremental_value_per_user"] = None
    return out
