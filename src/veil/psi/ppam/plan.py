"""The measurement both parties agree on: columns, window, cap, campaigns, metrics, budget.

Everything here is public to both parties; the SPU processes compare a digest of the plan
before any data moves. The privacy unit is one matched row (one user: one impression row of
the publisher, one conversion row of the advertiser). Each user sits in exactly one campaign
and one group, so the cells (campaign x group) compose in parallel; the kinds of aggregate
(users, conversions, value, value²) compose sequentially and split (ε, δ) evenly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from veil.psi.errors import InputError
from veil.psi.ppam.noise import NoiseSpec, noise_spec

__all__ = ["METRICS", "Aggregate", "MeasurePlan", "ShareColumns", "parse_window"]

METRICS = ("conversions", "value", "lift")
Kind = Literal["users", "conversions", "value", "value_sq"]
RevealTo = Literal["both", "publisher", "advertiser"]
MAX_CAMPAIGNS = 64
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_window(text: str, *, time_unit_s: float = 1.0) -> int:
    """'7d' → window in the shares' time units (seconds by default); must be >= 1."""
    m = _WINDOW.match(text)
    if not m:
        raise InputError(f"window must look like 7d, 12h, 30m or 3600s, got {text!r}")
    if not (math.isfinite(time_unit_s) and time_unit_s > 0):
        raise InputError("the time unit must be a positive number of seconds")
    value = float(m.group(1)) * _UNIT_S[m.group(2)] / time_unit_s
    if value < 1 or value != math.floor(value):
        raise InputError(f"window {text!r} is not a whole number (>= 1) of time units")
    return int(value)


@dataclass(frozen=True)
class ShareColumns:
    """Which share columns (names as `veil psi run` writes them, e.g. 'sender:t0') play which role.

    `real` is a zero column (non-zero on real rows, 0 on dummy rows); without one, dummy
    matches would be counted, so it is required whenever the run added dummies.
    """

    impression_time: str
    conversion_time: str
    value: str | None = None
    campaign: str | None = None
    group: str | None = None
    real: str | None = None

    def roles(self) -> dict[str, str | None]:
        return {"impression_time": self.impression_time, "conversion_time": self.conversion_time,
                "value": self.value, "campaign": self.campaign, "group": self.group,
                "real": self.real}


@dataclass(frozen=True)
class Aggregate:
    """One released number: a kind of sum over one cell, with its noise."""

    name: str
    cell: int
    campaign: int | None
    group: str | None
    kind: Kind
    noise: NoiseSpec


@dataclass(frozen=True)
class MeasurePlan:
    columns: ShareColumns
    window: int
    cap: int
    metrics: tuple[str, ...]
    epsilon: float
    delta: float = 1e-6
    campaigns: tuple[int, ...] = ()
    reveal_to: RevealTo = "both"
    exact: bool = False
    """Tests only: release the aggregates without noise (no CLI flag sets this)."""

    def __post_init__(self) -> None:
        if not self.metrics or any(m not in METRICS for m in self.metrics):
            raise InputError(f"metrics must be a non-empty subset of {', '.join(METRICS)}")
        if len(set(self.metrics)) != len(self.metrics):
            raise InputError("metrics are listed twice")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise InputError("window must be a whole number >= 1 of time units")
        if self.window >= 2**62:
            raise InputError("window is too large")
        if isinstance(self.cap, bool) or not isinstance(self.cap, int) or not 1 <= self.cap < 2**31:
            raise InputError("cap must be a whole number in [1, 2^31)")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise InputError(f"epsilon must be finite and > 0, got {self.epsilon!r}")
        if not (0 < self.delta < 1):
            raise InputError(f"delta must be in (0, 1), got {self.delta!r}")
        if len(self.campaigns) > MAX_CAMPAIGNS:
            raise InputError(f"at most {MAX_CAMPAIGNS} campaigns per measurement")
        if len(set(self.campaigns)) != len(self.campaigns) or any(
                isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < 2**63
                for c in self.campaigns):
            raise InputError("campaigns must be distinct whole numbers in [0, 2^63)")
        if self.reveal_to not in ("both", "publisher", "advertiser"):
            raise InputError("reveal_to must be both, publisher or advertiser")
        if self.campaigns and not self.columns.campaign:
            raise InputError("campaigns are listed but no campaign column is named")
        if self.columns.campaign and not self.campaigns:
            raise InputError("a campaign column needs the public list of campaigns to measure")
        if ("value" in self.metrics or "lift" in self.metrics) and not self.columns.value:
            raise InputError("metrics value and lift need the value column")
        if "lift" in self.metrics and not self.columns.group:
            raise InputError("lift needs the group column (non-zero = test, 0 = control)")
        names = [n for n in self.columns.roles().values() if n]
        if len(set(names)) != len(names):
            raise InputError("one share column is named for two roles")

    @property
    def lift(self) -> bool:
        return "lift" in self.metrics

    @property
    def kinds(self) -> tuple[Kind, ...]:
        if self.lift:
            return ("users", "conversions", "value", "value_sq")
        kinds: tuple[Kind, ...] = ("conversions",) if "conversions" in self.metrics else ()
        return kinds + (("value",) if "value" in self.metrics else ())

    def sensitivity(self, kind: Kind) -> int:
        return {"users": 1, "conversions": 1, "value": self.cap,
                "value_sq": self.cap * self.cap}[kind]

    def aggregates(self) -> tuple[Aggregate, ...]:
        """Every released number, in the order the MPC outputs them."""
        kinds = self.kinds
        eps, delta = self.epsilon / len(kinds), self.delta / len(kinds)
        campaigns: tuple[int | None, ...] = self.campaigns or (None,)
        groups: tuple[str | None, ...] = ("test", "control") if self.lift else (None,)
        noise = {kind: (NoiseSpec(self.sensitivity(kind), 0, self.sensitivity(kind), 0, math.inf,
                                  0.0) if self.exact
                        else noise_spec(self.sensitivity(kind), eps, delta)) for kind in kinds}
        out: list[Aggregate] = []
        cell = 0
        for campaign in campaigns:
            for group in groups:
                for kind in kinds:
                    where = "/".join(p for p in (
                        f"campaign={campaign}" if campaign is not None else "all",
                        group) if p)
                    out.append(Aggregate(f"{where}/{kind}", cell, campaign, group, kind,
                                         noise[kind]))
                cell += 1
        return tuple(out)

    def check_rows(self, rows: int) -> None:
        """Sums must stay below 2^62 in the ring: rows·cap² bounds the largest one."""
        if rows * self.cap * self.cap >= 2**62:
            raise InputError(f"{rows} rows with cap {self.cap} could overflow the 64-bit ring; "
                             "lower the cap")

    def to_worker(self) -> dict[str, Any]:
        """The plan as the SPU worker reads it (plain JSON; both parties compare its digest)."""
        return {
            "roles": self.columns.roles(),
            "window": self.window,
            "cap": self.cap,
            "campaigns": list(self.campaigns),
            "lift": self.lift,
            "reveal_to": self.reveal_to,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "aggregates": [{"name": a.name, "cell": a.cell, "kind": a.kind,
                            "shift": a.noise.shift, "coins": a.noise.coins}
                           for a in self.aggregates()],
        }
