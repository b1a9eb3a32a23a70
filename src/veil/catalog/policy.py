"""The per-dataset policy document (TOML or JSON).

Every model forbids unknown fields and is strict about types: a typo in a policy must refuse,
never silently fall back to a weaker default (fail closed).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from veil.catalog.errors import PolicyError
from veil.catalog.schema import ColumnSpec, SchemaSpec
from veil.names import check_backend, check_party
from veil.privacy.accounting import BudgetPolicy

__all__ = [
    "DEFAULT_JOIN_EPSILON",
    "DEFAULT_JOIN_SAMPLE_RATE",
    "FIXED_AFTER_UPLOAD",
    "ApprovalSpec",
    "AttestationSpec",
    "AutoRule",
    "ColumnSpec",
    "DatasetPolicy",
    "LimitsSpec",
    "MockViewSpec",
    "PrivacyUnitSpec",
    "SampleViewSpec",
    "SchemaSpec",
    "SyntheticViewSpec",
    "ViewsSpec",
    "parse_policy",
    "policy_diff",
]

# A view's keys per distinct real key, relative to the data's keys per row: 1 keeps the data's
# rows per key, so a join of views multiplies rows as the join of the data does.
DEFAULT_JOIN_SAMPLE_RATE = 1.0
DEFAULT_JOIN_EPSILON = 0.1

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _consumer(name: str) -> str:
    # Consumers are parties: a name no party can ever have would be a grant to no one.
    return check_party(name, "consumer party")


_Consumer = Annotated[str, AfterValidator(_consumer)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _unique(values: list[str], what: str) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must not repeat")
    return values


class AutoRule(_Strict):
    """Approve one bundle digest automatically when one of the named consumers submits it."""

    digest: str
    consumers: list[_Consumer] = Field(min_length=1)

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not _DIGEST.fullmatch(v):
            raise ValueError("the digest must look like 'sha256:<64 lowercase hex>'")
        return v

    @field_validator("consumers")
    @classmethod
    def _consumers(cls, v: list[str]) -> list[str]:
        return _unique(v, "consumers")


class ApprovalSpec(_Strict):
    """How job digests get approved: by hand, or automatically ("approve once, run many").

    ``auto_digests`` are approved for every consumer the dataset is shared with; each of
    ``rules`` approves one digest for the consumer parties it names.
    """

    mode: Literal["manual", "auto"] = "manual"
    auto_digests: list[str] = Field(default_factory=list)
    rules: list[AutoRule] = Field(default_factory=list)

    @field_validator("auto_digests")
    @classmethod
    def _digests(cls, v: list[str]) -> list[str]:
        for d in v:
            if not _DIGEST.fullmatch(d):
                raise ValueError("each digest must look like 'sha256:<64 lowercase hex>'")
        return _unique(v, "auto_digests")

    @field_validator("rules")
    @classmethod
    def _rules(cls, v: list[AutoRule]) -> list[AutoRule]:
        _unique([r.digest for r in v], "rules' digests")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalSpec:
        if self.mode == "auto" and not (self.auto_digests or self.rules):
            raise ValueError("mode 'auto' needs at least one entry in auto_digests or rules")
        if self.mode == "manual" and (self.auto_digests or self.rules):
            raise ValueError("auto_digests and rules are only meaningful with mode 'auto'")
        return self

    def approves(self, digest: str, consumer: str | None) -> bool:
        """Whether a submission of `digest` by `consumer` is approved without a person."""
        if self.mode != "auto":
            return False
        return digest in self.auto_digests or any(
            rule.digest == digest and consumer in rule.consumers for rule in self.rules)

    def with_rule(self, digest: str, consumer: str) -> ApprovalSpec:
        """This approval plus `digest` approved for `consumer` (the console's one-click rule)."""
        rules = [r for r in self.rules if r.digest != digest]
        old = next((r for r in self.rules if r.digest == digest), None)
        consumers = sorted({*(old.consumers if old else []), consumer})
        rules.append(AutoRule(digest=digest, consumers=consumers))
        return ApprovalSpec(mode="auto", auto_digests=list(self.auto_digests), rules=rules)


class MockViewSpec(_Strict):
    rows: int = Field(default=1000, ge=1, le=1_000_000)
    min_category_count: int = Field(default=5, ge=1)


class SampleViewSpec(_Strict):
    """A provider-chosen subset of real rows, only built when ``publishable`` is true."""

    publishable: bool = False
    fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    rows: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _one_size(self) -> SampleViewSpec:
        if self.fraction is not None and self.rows is not None:
            raise ValueError("give either fraction or rows, not both")
        return self


Bounds = Annotated[list[float], Field(min_length=2, max_length=2)]


class SyntheticViewSpec(_Strict):
    """A DP synthetic view (``veil.privacy.synthetic``), built in the background after upload.

    Public knowledge feeds it from the top level of the policy: ``categories`` (every allowed
    value of a column) and ``bounds`` (a numeric column's range). Numeric columns without
    bounds get DP-chosen bounds (10% of epsilon); text columns without categories are
    discovered with OpenDP's thresholded key release, which needs ``delta > 0``.
    """

    epsilon: float = Field(gt=0.0)
    delta: float = Field(default=0.0, ge=0.0, lt=1.0)
    rows: int = Field(default=1000, ge=1, le=1_000_000)
    method: Literal["auto", "copula", "mst", "aim"] = "auto"
    # Columns left out of the fit (filled with nulls in the view): free text, identifiers.
    exclude: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list)
    # A column to score the view by (train-synthetic-test-real) in the provider's report.
    target: str | None = Field(default=None, min_length=1, max_length=256)
    # Deprecated spelling of the top-level ``bounds`` (kept so older policies still parse).
    bounds: dict[str, Bounds] = Field(default_factory=dict)

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, v: list[str]) -> list[str]:
        return _unique(v, "views.synthetic.exclude")


class ViewsSpec(_Strict):
    mock: MockViewSpec = Field(default_factory=MockViewSpec)
    sample: SampleViewSpec | None = None
    synthetic: SyntheticViewSpec | None = None


class AttestationSpec(_Strict):
    """When the key broker may release this dataset's key to a secure-stage run.

    Mirrors ``veil.tee.broker.KeyPolicy`` field for field (catalog may not import tee; the
    platform converts). Without this section the default admits the local sandbox's
    software-TPM evidence (status ``warning``); ``require_hardware_backed = true`` can never be
    met by a local backend.
    """

    allowed_backends: list[str] = Field(default_factory=lambda: ["local-sandbox"], min_length=1)
    required_status: Literal["affirming", "warning"] = "warning"
    require_hardware_backed: bool = False
    allow_debug: bool = True
    max_token_age_s: int = Field(default=300, gt=0, le=3600)

    @field_validator("allowed_backends")
    @classmethod
    def _backends(cls, v: list[str]) -> list[str]:
        for b in v:
            check_backend(b)
        return _unique(v, "attestation.allowed_backends")


Category = str | int | float | bool


class PrivacyUnitSpec(_Strict):
    """Whom the DP guarantee protects: all rows sharing one value of ``id_column``.

    The release executor keeps at most ``max_contributions`` rows per id (rows beyond are
    dropped, rows with no id are dropped), so one unit changes at most that many rows; DP costs
    are OpenDP's privacy map at that distance. Without this section the unit is one row.
    """

    id_column: str = Field(min_length=1, max_length=256)
    max_contributions: int = Field(default=1, ge=1, le=10_000)


class LimitsSpec(_Strict):
    """Sandbox limits a provider imposes on every job that reads this dataset.

    A policy can only lower the operator's limits: a job runs with the lowest value of each
    knob over the operator's settings and every input's policy. Omitted knobs do not constrain.
    """

    wall_seconds: int | None = Field(default=None, gt=0)
    cpu_seconds: int | None = Field(default=None, gt=0)
    memory_bytes: int | None = Field(default=None, gt=0)
    max_processes: int | None = Field(default=None, ge=8)  # python needs a few threads
    output_bytes: int | None = Field(default=None, gt=0)


class DatasetPolicy(_Strict):
    """Who may use a dataset, how jobs are approved, and which outputs/views are allowed."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    consumers: list[_Consumer] = Field(default_factory=list)
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec)
    min_group_size: int = Field(default=10, ge=1)
    allowed_backends: list[str] = Field(default_factory=lambda: ["local-sandbox"], min_length=1)
    views: ViewsSpec = Field(default_factory=ViewsSpec)
    schema_spec: SchemaSpec | None = Field(default=None, alias="schema")
    budget: BudgetPolicy | None = None
    attestation: AttestationSpec | None = None
    privacy_unit: PrivacyUnitSpec | None = None
    # Public group keys per column: the only keys a DP group-by may release; the synthetic
    # view models these columns as categories with exactly these values.
    categories: dict[str, list[Category]] = Field(default_factory=dict)
    # Public ranges of numeric columns (lower, upper), e.g. from a data dictionary.
    bounds: dict[str, Bounds] = Field(default_factory=dict)
    # What the release executor does with aggregate-table groups below min_group_size.
    small_groups: Literal["drop", "refuse"] = "refuse"
    limits: LimitsSpec | None = None
    # The largest membership-inference advantage (max TPR - FPR of the executor's audit) a
    # notebook-trained model may show and still reach review; None: reviewers decide alone.
    max_mia_advantage: float | None = Field(default=None, ge=0, le=1)
    # Columns other providers' data can be joined on. In the mock and synthetic views they
    # hold synthetic keys that match other datasets' view keys as often as the real keys
    # match, by DP counts of the distinct keys and of each overlap (``veil.catalog.joinkeys``).
    join_keys: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=16)
    # A view has this fraction of the data's distinct keys per row (default
    # DEFAULT_JOIN_SAMPLE_RATE: as many rows per key as the data); never more keys than rows.
    join_sample_rate: float | None = Field(default=None, gt=0.0, le=1.0)
    # The epsilon of each DP count behind the view keys (default DEFAULT_JOIN_EPSILON): the
    # distinct keys of this dataset, and its overlap with each other dataset of the
    # collaboration; charged to this dataset's budget (an overlap to both datasets').
    join_epsilon: float | None = Field(default=None, gt=0.0, le=10.0)
    # Each join key value is in at most one row (joins on it are one-to-one): checked at
    # upload, and an upload that repeats a key is refused.
    join_one_to_one: bool = False

    @field_validator("consumers")
    @classmethod
    def _consumers(cls, v: list[str]) -> list[str]:
        return _unique(v, "consumers")

    @field_validator("allowed_backends")
    @classmethod
    def _backends(cls, v: list[str]) -> list[str]:
        for b in v:
            check_backend(b)
        return _unique(v, "allowed_backends")

    @field_validator("join_keys")
    @classmethod
    def _join_keys(cls, v: list[str]) -> list[str]:
        return _unique(v, "join_keys")

    @model_validator(mode="after")
    def _join_sampling(self) -> DatasetPolicy:
        if self.join_sample_rate is not None and not self.join_keys:
            raise ValueError("join_sample_rate is only meaningful with join_keys")
        if self.join_one_to_one and not self.join_keys:
            raise ValueError("join_one_to_one is only meaningful with join_keys")
        if self.join_epsilon is not None and not self.join_keys:
            raise ValueError("join_epsilon is only meaningful with join_keys")
        return self

    @property
    def effective_join_sample_rate(self) -> float:
        return DEFAULT_JOIN_SAMPLE_RATE if self.join_sample_rate is None \
            else self.join_sample_rate

    @property
    def effective_join_epsilon(self) -> float:
        return DEFAULT_JOIN_EPSILON if self.join_epsilon is None else self.join_epsilon

    def join_key_d_in(self, column: str) -> int:
        """How many distinct values of join key ``column`` one privacy unit can change."""
        unit = self.privacy_unit
        return 1 if unit is None or unit.id_column == column else unit.max_contributions

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: dict[str, list[Category]]) -> dict[str, list[Category]]:
        for column, values in v.items():
            if not values or len(values) > 10_000:
                raise ValueError(f"categories.{column} must list 1 to 10000 public values")
            if len({json.dumps(x) for x in values}) != len(values):
                raise ValueError(f"categories.{column} must not repeat")
        return v

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for column, (lo, hi) in v.items():
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
                raise ValueError(f"bounds.{column} must be finite with lower < upper")
        return v

    @model_validator(mode="after")
    def _public_knowledge(self) -> DatasetPolicy:
        """A column is either categorical or numeric, and has one set of public bounds."""
        both = sorted(set(self.categories) & set(self.all_bounds()))
        if both:
            raise ValueError("columns with both categories and bounds (choose one): "
                             + ", ".join(both))
        syn = self.views.synthetic
        if syn is not None:
            clash = sorted(c for c, b in syn.bounds.items()
                           if c in self.bounds and self.bounds[c] != b)
            if clash:
                raise ValueError("bounds and views.synthetic.bounds disagree for "
                                 + ", ".join(clash))
        for column, values in self.categories.items():
            texts = [str(x).lower() if isinstance(x, bool) else str(x) for x in values]
            kinds = {type(x) is bool or ("text" if isinstance(x, str) else "number")
                     for x in values}
            if len(kinds) > 1:
                raise ValueError(f"categories.{column} mixes kinds of values (text, numbers, "
                                 "true/false): a column's public values are all of one kind")
            if len(set(texts)) != len(texts):
                raise ValueError(f"categories.{column} has values that read the same as text")
        return self

    def all_bounds(self) -> dict[str, tuple[float, float]]:
        """Public bounds per column: the top level, then ``views.synthetic.bounds``."""
        out = {c: (b[0], b[1]) for c, b in self.bounds.items()}
        if self.views.synthetic is not None:
            for c, b in self.views.synthetic.bounds.items():
                out.setdefault(c, (b[0], b[1]))
        return out

    def public_rules(self) -> dict[str, Any]:
        """What a consumer may see to develop DP queries: the unit and the public keys."""
        return {"privacy_unit": None if self.privacy_unit is None
                else self.privacy_unit.model_dump(mode="json"),
                "categories": self.categories, "min_group_size": self.min_group_size,
                "small_groups": self.small_groups}

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


# What the stored ciphertext and views were built under: changing these needs a new upload.
FIXED_AFTER_UPLOAD = ("views", "schema", "privacy_unit", "join_keys", "join_sample_rate",
                      "join_epsilon")


def policy_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """A unified diff of two policy documents (canonical JSON), for a provider to confirm."""
    import difflib

    def lines(doc: dict[str, Any]) -> list[str]:
        return json.dumps(doc, indent=2, sort_keys=True).splitlines()

    return list(difflib.unified_diff(lines(old), lines(new), "current", "proposed",
                                     lineterm="", n=2))


def parse_policy(text: str, *, format: Literal["toml", "json"]) -> DatasetPolicy:
    """Parse and validate a policy document; any unknown or ill-typed field is a PolicyError."""
    data: Any
    if format == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"policy is not valid TOML ({_first_line(exc)})") from None
    elif format == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(
                f"policy is not valid JSON (line {exc.lineno}, column {exc.colno})"
            ) from None
    else:
        raise PolicyError(f"unknown policy format {format!r}; use 'toml' or 'json'")
    if not isinstance(data, dict):
        raise PolicyError("policy must be a table/object at the top level")
    try:
        return DatasetPolicy.model_validate(data)
    except ValidationError as exc:
        errors = [
            (".".join(str(p) for p in err["loc"]) or "<root>", err["msg"]) for err in exc.errors()
        ]
        raise PolicyError("invalid dataset policy", errors) from None


def _first_line(exc: Exception) -> str:
    # tomllib messages give a position and never echo the document's values.
    return str(exc).splitlines()[0][:200]
