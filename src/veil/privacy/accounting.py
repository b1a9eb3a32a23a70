"""Pure privacy accounting: compose costs and decide whether a charge fits a budget.

DB-free on purpose: the release gate loads the spends of one (dataset, consumer) pair inside
one transaction, calls :func:`check_charge`, and writes the new spends in the same transaction.

Rules
- ``basic``: sequential composition, eps and delta add up (Dwork-Roth Thm 3.16).
- ``zcdp``: pure eps-DP costs are (eps^2/2)-zCDP (Bun-Steinke 2016, Prop 1.4); rhos add up and are
  converted back with eps = rho + 2 sqrt(rho ln(1/delta')) (Prop 1.3), where delta' is the part
  of the policy's delta not already used by approximate-DP costs, which compose basically.
  Both bounds hold at once, so a charge is allowed when either fits; zCDP only ever helps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from veil.privacy.errors import BudgetPolicyError

__all__ = ["Budget", "BudgetPolicy", "ChargeDecision", "check_charge", "compose"]

Rule = Literal["basic", "zcdp"]
_TOL = 1e-12
_PERIOD = re.compile(r"^([1-9][0-9]{0,4})([hdw])$")
_PERIOD_UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


@dataclass(frozen=True)
class Budget:
    """A privacy cost or allowance (epsilon, delta)."""

    epsilon: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        for name, v in (("epsilon", self.epsilon), ("delta", self.delta)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise BudgetPolicyError(f"{name} must be a finite number, got {v!r}")
        if self.epsilon < 0:
            raise BudgetPolicyError(f"epsilon must be >= 0, got {self.epsilon!r}")
        if not 0 <= self.delta < 1:
            raise BudgetPolicyError(f"delta must be in [0, 1), got {self.delta!r}")


CostLike = Budget | tuple[float, float]


def _as_budget(c: object) -> Budget:
    if isinstance(c, Budget):
        return c
    if isinstance(c, tuple) and len(c) == 2:
        return Budget(*c)
    raise BudgetPolicyError("a cost must be a Budget or an (epsilon, delta) pair")


def _zcdp_to_eps(rho: float, delta: float) -> float:
    if rho == 0:
        return 0.0
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def compose(
    costs: Iterable[CostLike], rule: Rule = "basic", *, delta: float | None = None
) -> Budget:
    """Total cost of running all ``costs`` on the same data under ``rule``.

    For ``zcdp`` pass ``delta``: the total delta you accept; the result's delta equals it
    (unless approximate-DP costs alone exceed it, then basic composition is returned).
    """
    items = [_as_budget(c) for c in costs]
    basic = Budget(
        math.fsum(c.epsilon for c in items), min(math.fsum(c.delta for c in items), 1 - 1e-16)
    )
    if rule == "basic":
        return basic
    if rule != "zcdp":
        raise BudgetPolicyError(f"unknown composition rule {rule!r}; use 'basic' or 'zcdp'")
    if delta is None or isinstance(delta, bool) or not 0 < delta < 1:
        raise BudgetPolicyError("zcdp composition needs a total delta in (0, 1)")
    pure = [c for c in items if c.delta == 0]
    approx = [c for c in items if c.delta > 0]
    delta_approx = math.fsum(c.delta for c in approx)
    delta_conv = delta - delta_approx
    if delta_conv <= 0 or not pure:
        return basic
    rho = math.fsum(c.epsilon**2 / 2 for c in pure)
    eps = _zcdp_to_eps(rho, delta_conv) + math.fsum(c.epsilon for c in approx)
    zc = Budget(eps, delta)
    return zc if zc.epsilon < basic.epsilon else basic


class BudgetPolicy(BaseModel):
    """A provider's budget for one consumer on one dataset; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(gt=0, allow_inf_nan=False)
    delta: float = Field(default=0.0, ge=0, lt=1, allow_inf_nan=False)
    rule: Rule = "basic"
    renewal: str | None = Field(default=None, description='period such as "30d", "12h", "2w"')

    @field_validator("renewal")
    @classmethod
    def _check_renewal(cls, v: str | None) -> str | None:
        if v is not None and not _PERIOD.match(v):
            raise ValueError('renewal must look like "30d", "12h" or "2w"')
        return v

    @classmethod
    def parse(cls, doc: object) -> BudgetPolicy:
        """Validate a policy document, raising BudgetPolicyError (never a raw pydantic error)."""
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}"
                for e in exc.errors()
            )
            raise BudgetPolicyError(f"invalid budget policy: {problems}") from None

    @property
    def period(self) -> timedelta | None:
        if self.renewal is None:
            return None
        m = _PERIOD.match(self.renewal)
        assert m is not None  # validated
        return int(m.group(1)) * _PERIOD_UNIT[m.group(2)]

    def period_start(self, anchor: datetime, now: datetime) -> datetime | None:
        """Start of the current renewal period (spends before it no longer count); None if the
        budget never renews. ``anchor`` is when the policy took effect."""
        period = self.period
        if period is None:
            return None
        if now < anchor:
            raise BudgetPolicyError("now is before the policy's anchor time")
        return anchor + ((now - anchor) // period) * period


@dataclass(frozen=True)
class ChargeDecision:
    """Outcome of a charge; ``remaining_*`` are after the charge if allowed, else before it."""

    allowed: bool
    remaining_epsilon: float
    remaining_delta: float
    reason: str


def _total(policy: BudgetPolicy, costs: Sequence[Budget]) -> Budget:
    if policy.rule == "zcdp" and policy.delta > 0:
        return compose(costs, "zcdp", delta=policy.delta)
    return compose(costs, "basic")


def _fits(policy: BudgetPolicy, total: Budget) -> bool:
    return (
        total.epsilon <= policy.epsilon * (1 + _TOL) and total.delta <= policy.delta + _TOL * 1e-6
    )


def check_charge(
    policy: BudgetPolicy,
    spent: Sequence[CostLike],
    new: Sequence[CostLike],
    *,
    subject: str = "budget",
) -> ChargeDecision:
    """Decide whether charging ``new`` on top of ``spent`` stays within ``policy``.

    ``subject`` names the dataset (x consumer) in the refusal message. Pure and DB-free.
    """
    if not isinstance(policy, BudgetPolicy):
        raise BudgetPolicyError("policy must be a BudgetPolicy")
    spent_b = [_as_budget(c) for c in spent]
    new_b = [_as_budget(c) for c in new]
    before = _total(policy, spent_b)
    after = _total(policy, spent_b + new_b)
    # under zcdp the converted delta equals the policy's delta whenever anything was spent
    rem_eps_before = max(0.0, policy.epsilon - before.epsilon)
    rem_delta_before = max(0.0, policy.delta - before.delta) if spent_b else policy.delta
    if _fits(policy, after):
        return ChargeDecision(
            True,
            max(0.0, policy.epsilon - after.epsilon),
            max(0.0, policy.delta - after.delta),
            f"{subject}: charged, total epsilon {after.epsilon:.6g} of {policy.epsilon:.6g} "
            f"({policy.rule} composition)",
        )
    want = compose(new_b, "basic")
    return ChargeDecision(
        False,
        rem_eps_before,
        rem_delta_before,
        f"{subject}: refused, this release needs epsilon {want.epsilon:.6g}, delta "
        f"{want.delta:.3g} but only epsilon {rem_eps_before:.6g}, delta {rem_delta_before:.3g} "
        f"remain of ({policy.epsilon:.6g}, {policy.delta:.3g}) under {policy.rule} composition",
    )
