"""Stage-1 view builders and the view registry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from veil.catalog import (
    VIEW_BUILDERS,
    CatalogError,
    MockViewBuilder,
    SampleViewBuilder,
    ViewBuilder,
    ViewUnavailable,
    infer_schema,
    make_view_builder,
    parse_policy,
    register_view_builder,
    view_builders_for,
)
from veil.catalog.schema import Schema


def _real(n: int = 3000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    cities = np.array(["paris", "lyon", "nice", "lille", "rare-town"])
    city = cities[rng.integers(0, 4, n)]
    city[7] = "rare-town"  # seen once: must not be published
    return pa.table({
        "id": pa.array(np.arange(n) * 3 + 17),
        "income": pa.array(rng.normal(40_000, 9_000, n)),
        "age": pa.array([None if k % 5 == 0 else int(a) for k, a in
                         enumerate(rng.integers(18, 90, n))], pa.int64()),
        "city": pa.array(city),
        "member": pa.array(rng.random(n) < 0.3),
        "joined": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=int(d))
                            for d in rng.integers(0, 1000, n)]),
        "seen": pa.array([dt.datetime(2024, 1, 1) + dt.timedelta(minutes=int(m))
                          for m in rng.integers(0, 10_000, n)]),
        "note": pa.array([f"free text {k}" for k in range(n)]),
    })


def _feed(builder: ViewBuilder, table: pa.Table) -> Schema:
    for batch in table.to_batches(max_chunksize=256):
        builder.observe(batch)
    return infer_schema(table.to_batches(max_chunksize=256), arrow_schema=table.schema)


def _rows(frame: object) -> Iterator[tuple[object, ...]]:
    return frame.itertuples(index=False, name=None)  # type: ignore[attr-defined]


def test_mock_is_schema_faithful_and_copies_no_row() -> None:
    real = _real()
    builder = MockViewBuilder(rows=2000, seed=1)
    schema = _feed(builder, real)
    mock = builder.build(schema)
    real_df = real.to_pandas()
    assert list(mock.columns) == list(real_df.columns)
    assert dict(mock.dtypes) == dict(real_df.dtypes)
    assert len(mock) == 2000
    assert not set(_rows(mock)) & set(_rows(real_df))
    # No single real value of the identifier-like columns is copied either.
    assert not set(mock["note"]) & set(real_df["note"])
    # Ranges (coarsened outward) contain the data; categories are a subset minus rare ones.
    assert mock["age"].min() >= 18 and mock["age"].max() <= 90
    assert real_df["income"].min() >= mock["income"].min() - 1_000
    assert set(mock["city"].dropna()) == {"paris", "lyon", "nice", "lille"}
    assert 0.12 < mock["age"].isna().mean() < 0.28
    assert mock["id"].isna().sum() == 0 and mock["city"].isna().sum() == 0
    assert mock["joined"].min() >= real_df["joined"].min()
    assert mock["seen"].max() <= real_df["seen"].max()
    assert set(mock["member"]) == {True, False}


def test_mock_drops_categories_below_threshold() -> None:
    table = pa.table({"c": ["a"] * 10 + ["b"] * 3})
    builder = MockViewBuilder(rows=200, seed=3, min_category_count=5)
    mock = builder.build(_feed(builder, table))
    assert set(mock["c"]) == {"a"}
    builder = MockViewBuilder(rows=200, seed=3, min_category_count=20)
    mock = builder.build(_feed(builder, table))
    assert mock["c"].isna().all()


def test_mock_is_seeded_and_rejects_bad_args() -> None:
    real = _real(500)
    frames = []
    for _ in range(2):
        b = MockViewBuilder(rows=50, seed=9)
        frames.append(b.build(_feed(b, real)))
    assert frames[0].equals(frames[1])
    with pytest.raises(ValueError):
        MockViewBuilder(rows=0)
    with pytest.raises(CatalogError):
        MockViewBuilder().build(Schema())


def test_sample_rows_are_real_uniform_and_ordered() -> None:
    real = _real(5000)
    builder = SampleViewBuilder(rows=300, seed=4)
    sample = builder.build(_feed(builder, real))
    assert len(sample) == 300
    real_rows = set(_rows(real.to_pandas().fillna(-1)))
    assert set(_rows(sample.fillna(-1))) <= real_rows
    assert sample["id"].is_monotonic_increasing
    # Roughly uniform over the file: both halves are represented.
    assert 100 < (sample["id"] < real["id"][2500].as_py()).sum() < 200


def test_sample_fraction_and_cap() -> None:
    real = _real(5000)
    b = SampleViewBuilder(fraction=0.1, seed=5)
    assert 400 < len(b.build(_feed(b, real))) < 600
    capped = SampleViewBuilder(fraction=1.0, seed=5, max_rows=100)
    assert len(capped.build(_feed(capped, real))) == 100


def test_sample_argument_checks() -> None:
    for kwargs in ({}, {"rows": 5, "fraction": 0.5}, {"rows": 0}, {"fraction": 0.0},
                   {"fraction": 1.5}):
        with pytest.raises(ValueError):
            SampleViewBuilder(**kwargs)
    with pytest.raises(CatalogError):
        SampleViewBuilder(rows=3).build(Schema())


def test_registry_and_extension_point() -> None:
    assert {"mock", "sample", "synthetic"} <= set(VIEW_BUILDERS)
    with pytest.raises(ViewUnavailable, match="holographic"):
        make_view_builder("holographic")
    policy = parse_policy("[views.synthetic]\nepsilon = 1.0", format="toml")
    assert [b.name for b in view_builders_for(policy, seed=1)] == ["mock", "synthetic"]
    with pytest.raises(CatalogError, match="already registered"):
        register_view_builder("mock", MockViewBuilder)

    calls: list[dict[str, object]] = []

    def fake(**params: object) -> ViewBuilder:
        calls.append(params)
        return MockViewBuilder(rows=5)

    register_view_builder("holographic", fake)
    try:
        assert make_view_builder("holographic", rows=3).name == "mock" and calls == [{"rows": 3}]
    finally:
        del VIEW_BUILDERS["holographic"]


def test_synthetic_view_is_fitted_with_dp_and_keeps_the_schema() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    frame = pa.table({"age": rng.integers(18, 90, 600),
                      "region": rng.choice(["n", "s", "e"], 600),
                      "cost": rng.gamma(2.0, 100.0, 600)})
    # Public bounds: DP-chosen ones need more rows than this small test has (and are random).
    builder = make_view_builder("synthetic", epsilon=1.0, delta=1e-6, rows=200, seed=5,
                                bounds={"age": (18.0, 90.0), "cost": (0.0, 2000.0)})
    for batch in frame.to_batches(max_chunksize=128):
        builder.observe(batch)
    schema = Schema.model_validate({"columns": [
        {"name": "age", "type": "int", "nullable": False},
        {"name": "region", "type": "category", "nullable": False},
        {"name": "cost", "type": "float", "nullable": False}]})
    view = builder.build(schema)
    assert list(view.columns) == ["age", "region", "cost"] and len(view) == 200
    assert set(view["region"]) <= {"n", "s", "e"}
    report = builder.report  # type: ignore[attr-defined]
    assert report.epsilon <= 1.0 and set(report.columns) == {"age", "region", "cost"}


def test_view_builders_for_policy() -> None:
    assert [b.name for b in view_builders_for(None)] == ["mock"]
    hidden = parse_policy("[views.sample]\nrows = 10", format="toml")
    assert [b.name for b in view_builders_for(hidden)] == ["mock"]
    shown = parse_policy("[views.sample]\npublishable = true\nfraction = 0.5", format="toml")
    assert [b.name for b in view_builders_for(shown)] == ["mock", "sample"]
    assert all(isinstance(b, ViewBuilder) for b in view_builders_for(shown))
