"""Schema inference, the public/provider split, JSON round trip and validation."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from veil.catalog import (
    CatalogError,
    Column,
    Schema,
    SchemaRejected,
    SchemaSpec,
    UnsupportedFormat,
    infer_schema,
    validate,
)


def _batches(table: pa.Table, size: int = 7) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=size)


def test_infer_types_ranges_and_nulls_across_batches() -> None:
    n = 100
    table = pa.table({
        "i": pa.array([None if k == 50 else k for k in range(n)], pa.int64()),
        "f": pa.array([k / 2 for k in range(n)]),
        "cat": pa.array([["a", "b", "c"][k % 3] for k in range(n)]),
        "txt": pa.array([f"unique-{k}" for k in range(n)]),
        "b": pa.array([k % 2 == 0 for k in range(n)]),
        "d": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=k) for k in range(n)]),
        "t": pa.array([dt.datetime(2024, 1, 1, k % 24) for k in range(n)]),
    })
    schema = infer_schema(_batches(table), arrow_schema=table.schema)
    types = {c.name: c.type for c in schema.columns}
    assert types == {"i": "int", "f": "float", "cat": "category", "txt": "string",
                     "b": "bool", "d": "date", "t": "datetime"}
    i = schema.column("i")
    assert i.nullable and i.stats is not None
    assert (i.stats.null_count, i.stats.min, i.stats.max) == (1, 0, 99)
    assert schema.column("d").stats.max == "2024-04-09"  # type: ignore[union-attr]
    assert schema.column("cat").stats.distinct == 3  # type: ignore[union-attr]
    assert schema.column("txt").stats.distinct == 100  # type: ignore[union-attr]


def test_high_cardinality_stops_tracking() -> None:
    table = pa.table({"s": pa.array([f"v{k}" for k in range(5000)])})
    schema = infer_schema(_batches(table, 1000), arrow_schema=table.schema)
    col = schema.column("s")
    assert col.type == "string" and col.stats is not None and col.stats.distinct is None


def test_declared_category_wins_over_string() -> None:
    table = pa.table({"s": pa.array([f"v{k}" for k in range(10)])})
    schema = infer_schema(_batches(table), arrow_schema=table.schema, declared={"s": "category"})
    assert schema.column("s").type == "category"


def test_unsupported_arrow_types_are_refused() -> None:
    table = pa.table({"l": pa.array([[1], [2]])})
    with pytest.raises(UnsupportedFormat, match="'l'"):
        infer_schema(_batches(table), arrow_schema=table.schema)


def test_public_schema_has_no_stats_and_json_round_trips() -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", None, "y"]})
    schema = infer_schema(_batches(table), arrow_schema=table.schema)
    assert Schema.from_json(schema.to_json(include_stats=True)) == schema
    public = Schema.from_json(schema.to_json())
    assert public == schema.public()
    assert all(c.stats is None for c in public.columns)
    assert '"min"' not in schema.to_json() and '"min"' in schema.to_json(include_stats=True)
    with pytest.raises(CatalogError):
        Schema.from_json('{"columns": [{"name": "a", "type": "decimal", "nullable": false}]}')
    with pytest.raises(CatalogError):
        Schema.from_json('{"columns": [], "extra": 1}')


def test_validate_lists_every_problem() -> None:
    schema = Schema(columns=(
        Column(name="age", type="int", nullable=True),
        Column(name="ssn", type="string", nullable=False),
        Column(name="city", type="string", nullable=False),
    ))
    spec = SchemaSpec.model_validate({
        "columns": [
            {"name": "age", "type": "float", "nullable": False},
            {"name": "income"},
            {"name": "city", "type": "category"},
        ],
        "forbidden": ["ssn"],
        "allow_extra": False,
    })
    with pytest.raises(SchemaRejected) as info:
        validate(schema, spec)
    problems = info.value.problems
    assert "missing required column 'income'" in problems
    assert "column 'ssn' is forbidden by the policy" in problems
    assert "column 'age' is int, policy expects float" in problems
    assert "column 'age' has nulls, policy requires none" in problems
    assert any("not allowed" in p and "'ssn'" in p for p in problems)
    assert not any("city" in p for p in problems)  # string and category are compatible
    validate(schema, SchemaSpec())  # an empty spec accepts anything
