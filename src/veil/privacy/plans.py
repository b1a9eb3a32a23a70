"""Declared queries: what a notebook may ask of the data, evaluated only by trusted code.

A notebook never computes a DP value or an aggregate table that the gate would trust. It
declares a *plan* — which input datasets, an optional join, row filters, then one DP
measurement (:class:`DPQuery`), one thresholded group-by (:class:`AggregateQuery`) or one DP
model training (:class:`TrainQuery`, evaluated by ``veil.privacy.training``; :class:`SGDQuery`,
DP-SGD of an exported JAX loss, by ``veil.privacy.dpsgd``) — and the
release executor evaluates it on the full data after the workload has exited. In stage 1 the
same functions evaluate the plan on the views, so the researcher sees the code paths and the
noise. This module is the pure core: plan records, their validation, and their evaluation over
frames the caller supplies; it does no I/O.

Privacy unit and stability (what bounds the DP cost)
  Each dataset's policy names its privacy unit: an id column and ``max_contributions`` k.
  Evaluation first drops rows with no id and keeps the first k rows of each id in file order
  (row-wise, per id: adding or removing one unit changes only that unit's rows), so one unit
  changes at most k rows of the source. Without a unit, one row is the unit (k = 1).
  A join is an inner join on the id column of both sources (the same unit, e.g. a patient
  id). For one unit with at most k_a rows on the left and k_b on the right, the join holds at
  most k_a * k_b rows of that unit and none of any other, so the joined relation moves by at
  most ``d_in = k_a * k_b`` rows when one unit is added or removed (tested in
  ``tests/privacy/test_plans.py``). Row filters on public constants are 1-stable and keep the
  bound. OpenDP's privacy map at ``d_in`` gives the cost; nothing is declared by the workload.
  Joins on any other column, or over a source without a unit, are refused: their stability is
  unknown.

Group keys are public: DP group-bys and category histograms release only the keys the policy
declares under ``categories``; keys passed by the workload are an error.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from veil.privacy import mechanisms
from veil.privacy._opendp import check_bounds, check_epsilon
from veil.privacy.errors import InvalidParameterError, PrivacyError

__all__ = [
    "PINNED_PLANS_FILE",
    "PLAN_FORMAT",
    "AggregateQuery",
    "AggregateResult",
    "DPQuery",
    "Derive",
    "Filter",
    "Measure",
    "PlanDocument",
    "PlanError",
    "Relation",
    "SGDQuery",
    "SourceRules",
    "TrainQuery",
    "evaluate",
    "evaluate_aggregate",
    "evaluate_dp",
    "parse_pinned",
    "parse_plan",
    "pin_plans",
]

PLAN_FORMAT = "veil-plan/1"
_UNITS = "__veil_units__"
# A DP-SGD plan carries its exported loss and initial parameters (base64), hence megabytes.
MAX_PLAN_BYTES = 4 * 1024 * 1024
MAX_PINNED_BYTES = 16 * 1024 * 1024

Scalar = str | int | float | bool
Column = Annotated[str, Field(min_length=1, max_length=256)]
Mechanism = Literal["count", "sum", "mean", "quantile", "histogram", "grouped_count",
                    "grouped_sum"]


class PlanError(PrivacyError):
    """A declared query that cannot be evaluated; the message says why and what to use."""


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Filter(_Plan):
    """Keep rows where ``column op value``; ``value`` is a public constant."""

    column: Column
    op: Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
    value: Scalar | list[Scalar]

    @model_validator(mode="after")
    def _shape(self) -> Filter:
        is_list = isinstance(self.value, list)
        if self.op in ("in", "not in") and not is_list:
            raise ValueError(f"filter {self.op!r} needs a list of values")
        if self.op not in ("in", "not in") and is_list:
            raise ValueError(f"filter {self.op!r} needs a single value")
        values = self.value if isinstance(self.value, list) else [self.value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError("filter values must be finite")
        return self


_BINARY: dict[str, Any] = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                           "min": np.minimum, "max": np.maximum}
_UNARY: dict[str, Any] = {"abs": np.abs, "neg": np.negative, "log1p": np.log1p, "round": np.round}


class Derive(_Plan):
    """A derived column, computed row by row from one row's values and public constants.

    Row-wise maps keep the contribution bound (a unit's rows change, no one else's), so they
    cost nothing in stability. ``bucket`` maps a number to the index of its bin among the
    public ``edges`` (0 below the first edge, len(edges) at or above the last): its keys are
    public by construction, so a DP group-by may use it.
    """

    name: Column
    op: Literal["add", "sub", "mul", "div", "min", "max", "abs", "neg", "log1p", "round",
                "bucket"]
    args: list[Column | float] = Field(min_length=1, max_length=2)
    edges: list[float] | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _arity(self) -> Derive:
        arity = 2 if self.op in _BINARY else 1
        if len(self.args) != arity:
            raise ValueError(f"{self.op} takes {arity} argument(s)")
        if (self.op == "bucket") != (self.edges is not None):
            raise ValueError("bucket needs edges, and only bucket takes them")
        if self.edges is not None and any(b <= a for a, b in zip(self.edges, self.edges[1:],
                                                                   strict=False)):
            raise ValueError("bucket edges must be strictly increasing")
        if any(isinstance(a, float) and not math.isfinite(a) for a in self.args):
            raise ValueError("constants must be finite")
        if not any(isinstance(a, str) for a in self.args):
            raise ValueError("a derived column must read at least one column")
        return self


class Relation(_Plan):
    """Rows of one input dataset, or of two joined on their shared privacy-id column."""

    sources: list[Annotated[str, Field(min_length=3, max_length=129)]] = Field(
        min_length=1, max_length=2)
    join_on: Column | None = None
    derived: list[Derive] = Field(default_factory=list, max_length=32)
    filters: list[Filter] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _shape(self) -> Relation:
        if len(self.sources) == 2 and self.join_on is None:
            raise ValueError("two sources need join_on (their shared privacy-id column)")
        if len(self.sources) == 1 and self.join_on is not None:
            raise ValueError("join_on needs two sources")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError("a dataset cannot be joined with itself")
        return self

    def filter(self, column: str, op: str, value: Any) -> Relation:
        """This relation with one more row filter (a public constant, never a data value)."""
        return _build(Relation, {**self._doc(), "filters": [*self._doc()["filters"],
                                                             {"column": column, "op": op,
                                                              "value": _plain(value)}]})

    def derive(self, name: str, op: str, *args: str | float,
               edges: Sequence[float] | None = None) -> Relation:
        """This relation with one more derived column (see ``Derive``): derived columns are
        computed before the filters, so filters and group-bys may use them."""
        step = {"name": name, "op": op, "args": [_plain(a) for a in args],
                "edges": None if edges is None else [float(e) for e in edges]}
        return _build(Relation, {**self._doc(), "derived": [*self._doc()["derived"], step]})

    def join(self, other: Relation, *, on: str) -> Relation:
        """Inner join with another single source on the privacy-id column ``on``; derive and
        filter on the joined relation."""
        if len(self.sources) != 1 or len(other.sources) != 1 or other.filters or other.derived \
                or self.filters or self.derived:
            raise PlanError("join two datasets straight from veil.load, then derive and filter "
                            "on the join")
        return _build(Relation, {"sources": [*self.sources, *other.sources], "join_on": on})

    def _doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Measure(_Plan):
    """One OpenDP measurement; which fields apply depends on ``mechanism``."""

    mechanism: Mechanism
    epsilon: float = Field(gt=0)
    column: Column | None = None
    by: list[Column] | None = Field(default=None, min_length=1, max_length=4)
    bounds: tuple[float, float] | None = None
    q: float | None = None
    bins: list[float] | None = Field(default=None, min_length=2, max_length=10_000)
    n_candidates: int | None = None

    @model_validator(mode="after")
    def _fields(self) -> Measure:
        needs: dict[str, set[str]] = {
            "count": set(), "sum": {"column", "bounds"}, "mean": {"column", "bounds"},
            "quantile": {"column", "bounds", "q"}, "histogram": {"column"},
            "grouped_count": {"by"}, "grouped_sum": {"by", "column", "bounds"},
        }
        allowed = needs[self.mechanism] | {"mechanism", "epsilon"} | {
            "count": {"column"}, "quantile": {"n_candidates"}, "histogram": {"bins"},
        }.get(self.mechanism, set())
        given = {name for name in type(self).model_fields if getattr(self, name) is not None}
        missing = needs[self.mechanism] - given
        if missing:
            raise ValueError(f"{self.mechanism} needs {', '.join(sorted(missing))}")
        extra = given - allowed
        if extra:
            raise ValueError(f"{self.mechanism} takes no {', '.join(sorted(extra))}")
        check_epsilon(self.epsilon)
        if self.bounds is not None:
            check_bounds(self.bounds)
        return self


class DPQuery(_Plan):
    """A DP measurement over a relation: the only way a DP value can leave automatically."""

    kind: Literal["dp"] = "dp"
    relation: Relation
    measure: Measure


class Aggregate(_Plan):
    fn: Literal["count", "count_distinct", "sum", "mean"]
    column: Column | None = None

    @model_validator(mode="after")
    def _column(self) -> Aggregate:
        if (self.fn == "count") != (self.column is None):
            raise ValueError("count takes no column; count_distinct, sum and mean need one")
        return self


class AggregateQuery(_Plan):
    """A group-by whose small groups the executor counts (privacy units) and drops or refuses."""

    kind: Literal["aggregate"] = "aggregate"
    relation: Relation
    by: list[Column] = Field(min_length=1, max_length=4)
    aggregates: dict[Column, Aggregate] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _names(self) -> AggregateQuery:
        clash = set(self.by) & set(self.aggregates)
        if clash:
            raise ValueError(f"aggregate names clash with group columns: {sorted(clash)}")
        return self


Bound = tuple[float, float]


class TrainQuery(_Plan):
    """DP training of a model over a relation; ``veil.privacy.training`` evaluates it.

    The bounds are public (chosen before the data is seen): each feature, and for linear
    regression the label, is clamped to them and scaled to [-1, 1], so no data-dependent
    scaling leaks. Logistic regression's label is 0/1 (rows with other labels are dropped, a
    row-wise filter), so it takes no label bounds. ``delta`` is required: the library's
    Gaussian mechanism, composed over the steps under zCDP, gives (epsilon, delta)-DP.
    """

    kind: Literal["train"] = "train"
    relation: Relation
    model: Literal["linear_regression", "logistic_regression"]
    features: list[Column] = Field(min_length=1, max_length=256)
    label: Column
    bounds: dict[Column, Bound]
    epsilon: float = Field(gt=0)
    delta: float = Field(gt=0, le=1e-3)
    steps: int = Field(default=30, ge=1, le=1000)
    clip: float = Field(default=1.0, gt=0, le=100)
    learning_rate: float = Field(default=2.0, gt=0, le=100)

    @model_validator(mode="after")
    def _fields(self) -> TrainQuery:
        check_epsilon(self.epsilon)
        if len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat")
        if self.label in self.features:
            raise ValueError(f"the label {self.label!r} cannot also be a feature")
        needed = [*self.features, *([self.label] if self.model == "linear_regression" else [])]
        missing = [c for c in needed if c not in self.bounds]
        if missing:
            raise ValueError(f"public bounds are required for {', '.join(missing)}: pass "
                             "bounds={column: (lower, upper)} chosen without looking at the data")
        extra = sorted(set(self.bounds) - set(needed))
        if extra:
            raise ValueError(f"bounds given for {', '.join(extra)}, which the model does not "
                             "use" + (" (a logistic label is 0/1 and takes no bounds)"
                                      if self.label in extra else ""))
        for column, pair in self.bounds.items():
            try:
                check_bounds(pair, f"bounds of {column!r}")
            except InvalidParameterError as exc:
                raise ValueError(str(exc)) from None
        return self


Base64 = Annotated[str, Field(min_length=4, max_length=MAX_PLAN_BYTES,
                              pattern=r"^[A-Za-z0-9+/]*={0,2}$")]


class SGDQuery(_Plan):
    """DP-SGD of a user-defined model; ``veil.privacy.dpsgd`` checks the code and trains it.

    ``loss`` is a ``jax.export`` serialization (StableHLO, with its VJP) of the per-example
    loss ``loss(params, x, y) -> scalar`` for one example (``x``: float32[features], ``y``:
    float32[]); ``predict(params, x) -> scalar`` (optional) is used in stage 1 only, to show
    accuracy on the view. ``params`` is an ``.npz`` of float32 arrays (no pickle). Both are
    base64. The executor verifies the exported modules are pure computation before running
    them, and does the clipping, the Poisson sampling and the noise itself, so the guarantee
    holds whatever the loss computes.

    ``sampling_rate`` is public (each privacy unit joins each step's batch with this
    probability); the full data's size is private, so it cannot be derived from ``batch_size``,
    which is the public expected batch size the noisy gradient sum is divided by. Exactly one
    of ``noise_multiplier`` and ``epsilon`` (then the multiplier is calibrated to it). Feature
    bounds are public and required (values are clamped and scaled to [-1, 1]); a label bound
    is optional (a 0/1 label needs none).
    """

    kind: Literal["dpsgd"] = "dpsgd"
    relation: Relation
    features: list[Column] = Field(min_length=1, max_length=4096)
    label: Column
    bounds: dict[Column, Bound]
    loss: Base64
    predict: Base64 | None = None
    params: Base64
    noise_multiplier: float | None = Field(default=None, gt=0, le=1000)
    epsilon: float | None = Field(default=None, gt=0)
    delta: float = Field(gt=0, le=1e-3)
    clip: float = Field(default=1.0, gt=0, le=1000)
    sampling_rate: float = Field(gt=0, le=1)
    batch_size: int = Field(ge=1, le=1_000_000)
    epochs: float = Field(gt=0, le=1000)
    learning_rate: float = Field(default=0.01, gt=0, le=100)
    optimizer: Literal["sgd", "adam"] = "adam"

    @model_validator(mode="after")
    def _fields(self) -> SGDQuery:
        if (self.noise_multiplier is None) == (self.epsilon is None):
            raise ValueError("give exactly one of noise_multiplier and epsilon")
        if self.epsilon is not None:
            check_epsilon(self.epsilon)
        if len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat")
        if self.label in self.features:
            raise ValueError(f"the label {self.label!r} cannot also be a feature")
        missing = [c for c in self.features if c not in self.bounds]
        if missing:
            raise ValueError(f"public bounds are required for {', '.join(missing)}: pass "
                             "bounds={column: (lower, upper)} chosen without looking at the data")
        extra = sorted(set(self.bounds) - {*self.features, self.label})
        if extra:
            raise ValueError(f"bounds given for {', '.join(extra)}, which the model does not use")
        for column, pair in self.bounds.items():
            try:
                check_bounds(pair, f"bounds of {column!r}")
            except InvalidParameterError as exc:
                raise ValueError(str(exc)) from None
        return self


Query = DPQuery | AggregateQuery | TrainQuery | SGDQuery


class PlanDocument(_Plan):
    """What a workload writes for ``veil.publish(name, query)``: the plan, never a value."""

    format: Literal["veil-plan/1"] = "veil-plan/1"
    query: Annotated[DPQuery | AggregateQuery | TrainQuery | SGDQuery,
                     Field(discriminator="kind")]

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True,
                          separators=(",", ":")).encode()

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()


def parse_plan(data: bytes | Mapping[str, Any]) -> PlanDocument:
    """Parse a plan strictly; any unknown field, wrong type or oversize is a PlanError."""
    if isinstance(data, bytes | bytearray):
        if len(data) > MAX_PLAN_BYTES:
            raise PlanError("the plan is too large")
        try:
            data = json.loads(data)
        except ValueError:
            raise PlanError("the plan is not JSON") from None
    return _build(PlanDocument, data)


PINNED_PLANS_FILE = "veil.plans.json"


def pin_plans(plans: Mapping[str, PlanDocument]) -> bytes:
    """The bundle file that pins each output's plan before the run (see ``parse_pinned``)."""
    return json.dumps({name: doc.model_dump(mode="json") for name, doc in sorted(plans.items())},
                      sort_keys=True, indent=1).encode()


def parse_pinned(data: bytes) -> dict[str, PlanDocument]:
    """Plans pinned at submission: the providers approve them with the bundle digest.

    A plan's parameters (bounds, filters, bins, epsilon) chosen inside the secure run could
    encode the data; only a plan fixed before the run, identical to the one the notebook
    publishes, is released without review.
    """
    if len(data) > MAX_PINNED_BYTES:
        raise PlanError(f"{PINNED_PLANS_FILE} is too large")
    try:
        raw = json.loads(data)
    except ValueError:
        raise PlanError(f"{PINNED_PLANS_FILE} is not JSON") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise PlanError(f"{PINNED_PLANS_FILE} must map output names to plans")
    return {name: parse_plan(doc) for name, doc in raw.items()}


def _build(model: type[Any], data: Any) -> Any:
    try:
        # JSON mode: tuples arrive as lists, and strictness still refuses "1" for 1.
        return model.model_validate_json(json.dumps(data))
    except (ValidationError, TypeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "plan"
            raise PlanError(f"invalid plan at {where}: {first['msg']}") from None
        raise PlanError("invalid plan: not JSON-serialisable") from None


def _plain(value: Any) -> Any:
    """numpy scalars and tuples as plain JSON values; anything else is refused."""
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool):
        return value
    raise PlanError(f"a plan value must be a constant, not {type(value).__name__}")


# --------------------------------------------------------------------------- trusted inputs


@dataclass(frozen=True)
class SourceRules:
    """What the provider's policy says about one dataset; supplied by trusted code."""

    name: str
    id_column: str | None = None
    max_contributions: int = 1
    categories: Mapping[str, Sequence[Scalar]] = field(default_factory=dict)
    min_group_size: int = 10
    small_groups: Literal["drop", "refuse"] = "refuse"

    @classmethod
    def from_public(cls, name: str, rules: Mapping[str, Any]) -> SourceRules:
        """From ``DatasetPolicy.public_rules()`` (the executor's and stage 1's common form)."""
        unit = rules.get("privacy_unit") or {}
        return cls(name=name, id_column=unit.get("id_column"),
                   max_contributions=int(unit.get("max_contributions", 1)),
                   categories=dict(rules.get("categories") or {}),
                   min_group_size=int(rules.get("min_group_size", 10)),
                   small_groups=rules.get("small_groups", "refuse"))


@dataclass
class Prepared:
    """A relation's rows after truncation, join and filters, and how far one unit moves them."""

    frame: pd.DataFrame
    d_in: int
    id_column: str | None
    owners: dict[str, SourceRules]  # column -> the source that holds it


def prepare(relation: Relation, frames: Mapping[str, pd.DataFrame],
            rules: Mapping[str, SourceRules]) -> Prepared:
    """Bound each source's contributions, join, filter (see the module docstring)."""
    for source in relation.sources:
        if source not in frames or source not in rules:
            raise PlanError(f"dataset {source!r} is not an input of this job")
    bounded = [_bound(frames[s], rules[s]) for s in relation.sources]
    owners = {str(c): rules[s] for s, f in zip(relation.sources, bounded, strict=True)
              for c in f.columns}
    if relation.join_on is None:
        frame, d_in = bounded[0], rules[relation.sources[0]].max_contributions
        id_column = rules[relation.sources[0]].id_column
    else:
        frame, d_in = _join(relation, bounded, [rules[s] for s in relation.sources])
        id_column = relation.join_on
        owners[relation.join_on] = rules[relation.sources[0]]
    for step in relation.derived:
        frame = _derive(frame, step)
        if step.op == "bucket":  # its keys are the bin indices: public by construction
            assert step.edges is not None
            owners[step.name] = SourceRules(f"derived {step.name}", categories={
                step.name: list(range(len(step.edges) + 1))})
        else:
            owners.pop(step.name, None)
    for flt in relation.filters:
        frame = frame[_mask(frame, flt)]
    return Prepared(frame, d_in, id_column, owners)


def _derive(frame: pd.DataFrame, step: Derive) -> pd.DataFrame:
    if step.name in frame.columns:
        raise PlanError(f"derived column {step.name!r} already exists")
    values = []
    for arg in step.args:
        if isinstance(arg, str):
            if arg not in frame.columns:
                raise PlanError(f"derive {step.name!r}: unknown column {arg!r}")
            column = frame[arg]
            if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
                raise PlanError(f"derive {step.name!r}: column {arg!r} is not numeric")
            values.append(column.to_numpy(dtype=float, na_value=np.nan))
        else:
            values.append(np.full(len(frame), float(arg)))
    with np.errstate(all="ignore"):  # division by zero, log of negatives: NaN, dropped later
        if step.op == "bucket":
            assert step.edges is not None
            out = np.searchsorted(np.asarray(step.edges), values[0], side="right").astype(float)
            out[np.isnan(values[0])] = np.nan
        elif step.op in _BINARY:
            out = _BINARY[step.op](values[0], values[1])
        else:
            out = _UNARY[step.op](values[0])
    out[~np.isfinite(out)] = np.nan
    result = pd.Series(out, index=frame.index)
    if step.op == "bucket":
        result = result.astype("Int64")
    return frame.assign(**{step.name: result})


def _bound(frame: pd.DataFrame, rule: SourceRules) -> pd.DataFrame:
    if rule.id_column is None:
        return frame
    if rule.id_column not in frame.columns:
        raise PlanError(f"{rule.name} has no privacy-id column {rule.id_column!r}")
    kept = frame[frame[rule.id_column].notna()]
    return kept.groupby(rule.id_column, sort=False, dropna=True).head(rule.max_contributions)


def _join(relation: Relation, frames: list[pd.DataFrame],
          rules: list[SourceRules]) -> tuple[pd.DataFrame, int]:
    on = relation.join_on
    for rule in rules:
        if rule.id_column is None or rule.id_column != on:
            unit = rule.id_column or "one row (no privacy unit in its policy)"
            raise PlanError(
                f"a join must be on the privacy-id column of both datasets; {rule.name}'s "
                f"unit is {unit}, not {on!r}, and a join on another key has unknown stability")
    left, right = frames
    clash = (set(left.columns) & set(right.columns)) - {on}
    if clash:
        raise PlanError(f"both datasets have column(s) {sorted(map(str, clash))}; filter on "
                        "one side only or ask the providers to rename")
    joined = left.merge(right, on=on, how="inner", sort=False)
    return joined, rules[0].max_contributions * rules[1].max_contributions


_COMPARE: dict[str, Any] = {"==": operator.eq, "!=": operator.ne, "<": operator.lt,
                            "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _mask(frame: pd.DataFrame, flt: Filter) -> pd.Series:
    if flt.column not in frame.columns:
        raise PlanError(f"filter on unknown column {flt.column!r}")
    col = frame[flt.column]
    value = flt.value
    try:
        if flt.op == "in":
            return col.isin(value)  # type: ignore[arg-type]
        if flt.op == "not in":
            return ~col.isin(value)  # type: ignore[arg-type]
        mask = _COMPARE[flt.op](col, value)
    except TypeError:
        raise PlanError(f"filter {flt.column} {flt.op} compares values of different types") \
            from None
    return mask.fillna(False).astype(bool)


# --------------------------------------------------------------------------- evaluation


def evaluate_dp(query: DPQuery, frames: Mapping[str, pd.DataFrame],
                rules: Mapping[str, SourceRules]) -> mechanisms.DPResult:
    """Run the measurement with OpenDP at the relation's contribution bound."""
    prepared = prepare(query.relation, frames, rules)
    m, df, d = query.measure, prepared.frame, prepared.d_in
    try:
        if m.mechanism == "count":
            return mechanisms.count(df, epsilon=m.epsilon, column=m.column, d_in=d)
        assert m.column is not None or m.by is not None
        if m.mechanism == "sum":
            return mechanisms.sum(df, str(m.column), bounds=_pair(m.bounds), epsilon=m.epsilon,
                                  d_in=d)
        if m.mechanism == "mean":
            return mechanisms.mean(df, str(m.column), bounds=_pair(m.bounds),
                                   epsilon=m.epsilon, d_in=d)
        if m.mechanism == "quantile":
            return mechanisms.quantile(df, str(m.column), float(m.q or 0), bounds=_pair(m.bounds),
                                       epsilon=m.epsilon, n_candidates=m.n_candidates or 101,
                                       d_in=d)
        if m.mechanism == "histogram":
            if m.bins is not None:
                return mechanisms.histogram(df, str(m.column), epsilon=m.epsilon, bins=m.bins,
                                            d_in=d)
            return mechanisms.histogram(df, str(m.column), epsilon=m.epsilon, d_in=d,
                                        categories=_public_keys(prepared, [str(m.column)],
                                                                single=True))
        by = list(m.by or [])
        keys = _public_keys(prepared, by)
        if m.mechanism == "grouped_count":
            return mechanisms.grouped_count(df, by, epsilon=m.epsilon, keys=keys, d_in=d)
        return mechanisms.grouped_sum(df, by, str(m.column), bounds=_pair(m.bounds),
                                      epsilon=m.epsilon, keys=keys, d_in=d)
    except InvalidParameterError as exc:
        raise PlanError(str(exc)) from None


def _pair(bounds: tuple[float, float] | None) -> tuple[float, float]:
    assert bounds is not None  # Measure's validator requires them where used
    return bounds


def _public_keys(prepared: Prepared, by: list[str], *, single: bool = False) -> list[Any]:
    per_column: list[list[Any]] = []
    for column in by:
        owner = prepared.owners.get(column)
        declared = None if owner is None else owner.categories.get(column)
        if not declared:
            raise PlanError(
                f"no public categories for {column!r}: group keys must be public, so its "
                "provider must declare them in the policy (categories); keys chosen by the "
                "notebook are refused")
        per_column.append(list(declared))
    if single:
        return per_column[0]
    keys: list[list[Any]] = [[]]
    for values in per_column:
        keys = [[*k, v] for k in keys for v in values]
    if len(keys) > 100_000:
        raise PlanError("too many group keys (more than 100000 combinations)")
    return keys


@dataclass(frozen=True)
class AggregateResult:
    """A thresholded table computed by trusted code, and what the threshold did."""

    table: pd.DataFrame
    groups: int
    dropped: int
    min_group_size: int
    smallest_kept: int | None


def evaluate_aggregate(query: AggregateQuery, frames: Mapping[str, pd.DataFrame],
                       rules: Mapping[str, SourceRules]) -> AggregateResult:
    """Group, count each group's privacy units itself, drop or refuse small groups.

    The threshold is the strictest ``min_group_size`` of the sources; the executor's own count
    (distinct privacy ids, or rows without a unit) decides, never a column of the notebook's.
    """
    prepared = prepare(query.relation, frames, rules)
    df = prepared.frame
    sources = [rules[s] for s in query.relation.sources]
    threshold = max(r.min_group_size for r in sources)
    drop = all(r.small_groups == "drop" for r in sources)
    for column in [*query.by, *(a.column for a in query.aggregates.values() if a.column)]:
        if column not in df.columns:
            raise PlanError(f"unknown column {column!r}")
    for name, agg in query.aggregates.items():
        if agg.fn in ("sum", "mean") and not _numeric(df[str(agg.column)]):
            raise PlanError(f"aggregate {name!r}: column {agg.column!r} is not numeric")
    spec: dict[str, tuple[str, str]] = {
        _UNITS: (prepared.id_column, "nunique") if prepared.id_column else (query.by[0], "size")}
    for name, agg in query.aggregates.items():
        fn = {"count": "size", "count_distinct": "nunique", "sum": "sum", "mean": "mean"}[agg.fn]
        spec[name] = (agg.column or query.by[0], fn)
    if len(df):
        table = df.groupby(query.by, sort=True, dropna=False).agg(**spec).reset_index()
    else:
        table = pd.DataFrame(columns=[*query.by, *spec])
    sizes = table.pop(_UNITS).to_numpy(dtype=np.int64)
    small = sizes < threshold
    if small.any() and not drop:
        raise PlanError(f"{int(small.sum())} of {len(table)} groups have fewer than "
                        f"{threshold} people (the strictest input's min_group_size); the "
                        "policy refuses such tables — coarsen the groups or filter")
    kept = table[~small].reset_index(drop=True)
    smallest = int(sizes[~small].min()) if (~small).any() else None
    return AggregateResult(kept, len(table), int(small.sum()), threshold, smallest)


def _numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def evaluate(document: PlanDocument, frames: Mapping[str, pd.DataFrame],
             rules: Mapping[str, SourceRules]) -> Any:
    """The plan's result: a ``DPResult``, an ``AggregateResult``, a ``training.DPModel`` or a
    ``dpsgd.SGDModel``."""
    query = document.query
    if isinstance(query, DPQuery):
        return evaluate_dp(query, frames, rules)
    if isinstance(query, TrainQuery):
        from veil.privacy.training import train

        return train(query, frames, rules)
    if isinstance(query, SGDQuery):
        from veil.privacy.dpsgd import train_sgd

        return train_sgd(query, frames, rules)
    return evaluate_aggregate(query, frames, rules)
