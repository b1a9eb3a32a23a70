"""Dataset schemas: the logical column types shown to consumers, inferred in one streamed pass.

A :class:`Schema` carries per-column statistics (null counts, ranges, distinct counts) that are
for the provider only: :meth:`Schema.public` strips them before anything is shown to consumers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from veil.catalog.errors import CatalogError, SchemaRejected, UnsupportedFormat

__all__ = [
    "COLUMN_TYPES",
    "Column",
    "ColumnStats",
    "ColumnType",
    "Schema",
    "infer_schema",
    "validate",
]

ColumnType = Literal["int", "float", "string", "bool", "date", "datetime", "category"]
COLUMN_TYPES: tuple[str, ...] = get_args(ColumnType)

# A string column is a category when it has at most this many distinct values and they make up
# at most half of its non-null values (so a column of unique names never becomes a category).
CATEGORY_MAX_DISTINCT = 1000
# Numeric columns count their distinct values up to this many (a low-cardinality number such as
# a 1/2 sex code is a category in disguise; the synthetic view needs to know).
NUMERIC_MAX_DISTINCT = 64
# A numeric column with at most this many distinct values is modelled as a category.
LOW_CARDINALITY = 16
_CATEGORY_MAX_RATIO = 0.5

Scalar = int | float | str | bool | None


class ColumnStats(BaseModel):
    """Provider-side statistics; never part of the public schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = 0
    null_count: int = 0
    min: Scalar = None
    max: Scalar = None
    # None when above CATEGORY_MAX_DISTINCT (text) / NUMERIC_MAX_DISTINCT (numbers), or untracked
    distinct: int | None = None
    values: list[Scalar] | None = None  # a low-cardinality numeric column's values


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: ColumnType
    nullable: bool
    stats: ColumnStats | None = None


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: tuple[Column, ...] = Field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def public(self) -> Schema:
        """The schema as consumers see it: names, types, nullability; no statistics."""
        return Schema(columns=tuple(c.model_copy(update={"stats": None}) for c in self.columns))

    def to_json(self, *, include_stats: bool = False) -> str:
        return (self if include_stats else self.public()).model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> Schema:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise CatalogError(f"invalid schema document ({exc.error_count()} errors)") from None


def logical_type(arrow_type: pa.DataType, *, column: str) -> ColumnType:
    """Map a storage type to its logical type; types the catalog does not store are refused."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return "category"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return "string"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "datetime"
    raise UnsupportedFormat(f"column {column!r} has unsupported type {t}")


def storage_type(arrow_type: pa.DataType, *, column: str) -> pa.DataType:
    """The normalised Arrow type a column is stored as (one type per logical type)."""
    kind = logical_type(arrow_type, column=column)
    if kind == "datetime":
        return arrow_type
    return {
        "bool": pa.bool_(),
        "int": pa.int64(),
        "float": pa.float64(),
        "string": pa.string(),
        "category": pa.string(),
        "date": pa.date32(),
    }[kind]


def arrow_type_for(kind: ColumnType) -> pa.DataType:
    """Storage type used when a policy declares a column's logical type up front."""
    return {
        "bool": pa.bool_(),
        "int": pa.int64(),
        "float": pa.float64(),
        "string": pa.string(),
        "category": pa.string(),
        "date": pa.date32(),
        "datetime": pa.timestamp("us"),
    }[kind]


def _py(value: Any) -> Scalar:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is None or isinstance(value, int | float | str | bool):
        return value
    return str(value)


class _ColumnAcc:
    __slots__ = ("count", "declared", "distinct", "kind", "max", "min", "name", "nulls")

    def __init__(self, name: str, kind: ColumnType, declared: ColumnType | None) -> None:
        self.name = name
        self.kind = kind
        self.declared = declared
        self.count = 0
        self.nulls = 0
        self.min: Any = None
        self.max: Any = None
        self.distinct: set[Any] | None = (
            set() if kind in ("string", "category", "int", "float") else None)

    def observe(self, arr: pa.Array) -> None:
        self.count += len(arr)
        self.nulls += arr.null_count
        if self.kind in ("int", "float", "date", "datetime") and arr.null_count < len(arr):
            mm = pc.min_max(arr)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            if isinstance(lo, float) and lo != lo:  # NaN-only batch
                return
            self.min = lo if self.min is None else min(self.min, lo)
            self.max = hi if self.max is None else max(self.max, hi)
            if self.kind in ("int", "float") and self.distinct is not None:
                self.distinct.update(pc.unique(arr.drop_null()).to_pylist())
                if len(self.distinct) > NUMERIC_MAX_DISTINCT:
                    self.distinct = None
        elif self.distinct is not None:
            self.distinct.update(pc.unique(arr.drop_null()).to_pylist())
            if len(self.distinct) > CATEGORY_MAX_DISTINCT:
                self.distinct = None  # high cardinality: stop tracking, memory stays bounded

    def finish(self) -> Column:
        kind = self.kind
        distinct = None
        if self.distinct is not None and len(self.distinct) <= CATEGORY_MAX_DISTINCT:
            distinct = len(self.distinct)
        values = None
        if self.kind in ("int", "float") and distinct is not None \
                and distinct <= LOW_CARDINALITY:
            values = sorted(v for v in self.distinct or () if v == v)  # no NaN
        if self.declared is not None and _compatible(self.declared, kind):
            kind = self.declared  # e.g. a declared category over an inferred string
        elif kind == "string" and distinct is not None:
            non_null = self.count - self.nulls
            if non_null and distinct <= _CATEGORY_MAX_RATIO * non_null:
                kind = "category"
        stats = ColumnStats(
            count=self.count,
            null_count=self.nulls,
            min=_py(self.min),
            max=_py(self.max),
            distinct=distinct,
            values=values,
        )
        return Column(name=self.name, type=kind, nullable=self.nulls > 0, stats=stats)


class SchemaInferrer:
    """Streaming schema inference: feed record batches, then :meth:`finish`.

    ``declared`` maps column names to logical types fixed by the policy (they win over
    inference, e.g. a declared ``category`` over an inferred ``string``).
    """

    def __init__(
        self, arrow_schema: pa.Schema, declared: dict[str, ColumnType] | None = None
    ) -> None:
        declared = declared or {}
        self._cols = [
            _ColumnAcc(f.name, logical_type(f.type, column=f.name), declared.get(f.name))
            for f in arrow_schema
        ]

    def observe(self, batch: pa.RecordBatch) -> None:
        for acc, arr in zip(self._cols, batch.columns, strict=True):
            acc.observe(arr)

    def finish(self) -> Schema:
        return Schema(columns=tuple(acc.finish() for acc in self._cols))


def infer_schema(
    batches: Iterable[pa.RecordBatch],
    *,
    arrow_schema: pa.Schema,
    declared: dict[str, ColumnType] | None = None,
) -> Schema:
    """Infer a :class:`Schema` (with provider-side stats) from a stream of record batches."""
    inferrer = SchemaInferrer(arrow_schema, declared)
    for batch in batches:
        inferrer.observe(batch)
    return inferrer.finish()


def _compatible(expected: ColumnType, actual: ColumnType) -> bool:
    return expected == actual or {expected, actual} == {"string", "category"}


# -- what a provider's policy expects of the data (the policy's ``[schema]`` section) ---------
# Here, beside the schema they are checked against, so the policy imports the schema and never
# the other way round.


class _StrictSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ColumnSpec(_StrictSpec):
    """An expected column; ``type``/``nullable`` of None mean "any"."""

    name: str = Field(min_length=1, max_length=256)
    type: ColumnType | None = None
    nullable: bool | None = None


class SchemaSpec(_StrictSpec):
    """What the uploaded data must look like: required columns, forbidden names, extras."""

    columns: list[ColumnSpec] = Field(default_factory=list)
    forbidden: list[str] = Field(default_factory=list)
    allow_extra: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> SchemaSpec:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("schema column names must not repeat")
        if set(names) & set(self.forbidden):
            raise ValueError("a column cannot be both expected and forbidden")
        return self


def check_arrow_schema(arrow_schema: pa.Schema, expected: SchemaSpec) -> list[str]:
    """Problems detectable before any row is read: names and storage types."""
    problems = check_names(arrow_schema.names, expected)
    for spec in expected.columns:
        if spec.type is None or spec.name not in arrow_schema.names:
            continue
        found = logical_type(arrow_schema.field(spec.name).type, column=spec.name)
        if not _compatible(spec.type, found):
            problems.append(f"column {spec.name!r} is {found}, policy expects {spec.type}")
    return problems


def check_names(names: list[str], expected: SchemaSpec) -> list[str]:
    """Problems detectable from column names alone."""
    problems: list[str] = []
    present = set(names)
    for spec in expected.columns:
        if spec.name not in present:
            problems.append(f"missing required column {spec.name!r}")
    for name in expected.forbidden:
        if name in present:
            problems.append(f"column {name!r} is forbidden by the policy")
    if not expected.allow_extra:
        allowed = {c.name for c in expected.columns}
        extra = [n for n in names if n not in allowed]
        if extra:
            problems.append("columns not allowed by the policy: " + ", ".join(map(repr, extra)))
    return problems


def validate(schema: Schema, expected: SchemaSpec) -> None:
    """Raise :class:`SchemaRejected` listing every way ``schema`` violates ``expected``."""
    problems = check_names(schema.names, expected)
    by_name = {c.name: c for c in schema.columns}
    for spec in expected.columns:
        col = by_name.get(spec.name)
        if col is None:
            continue
        if spec.type is not None and not _compatible(spec.type, col.type):
            problems.append(f"column {spec.name!r} is {col.type}, policy expects {spec.type}")
        if spec.nullable is False and col.nullable:
            problems.append(f"column {spec.name!r} has nulls, policy requires none")
    if problems:
        raise SchemaRejected(problems)
