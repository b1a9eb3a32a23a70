"""Streamed ingest: round trips, encryption at rest, and every bad input leaving nothing behind."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from catalog_support import Unseekable, make_csv

from veil.catalog import (
    CatalogError,
    MalformedUpload,
    MockViewBuilder,
    SampleViewBuilder,
    SchemaRejected,
    UnsupportedFormat,
    UploadTooLarge,
    ViewUnavailable,
    ingest,
    load_frame,
    parse_policy,
    read_dataset,
    view_builders_for,
)
from veil.crypto import DataKey, IntegrityError

CTX = b"veil/dataset/ds-1/data"


def _ingest(data: bytes | Any, store: Path, dek: DataKey, **kw: Any) -> Any:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    kw.setdefault("filename", "data.csv")
    kw.setdefault("max_bytes", 10 << 20)
    return ingest(src, dest=store / "data.enc", dek=dek, context=CTX, **kw)


def _parquet(table: pa.Table, **kw: Any) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def _assert_nothing_stored(store: Path) -> None:
    assert list(store.iterdir()) == []


# -- happy paths --------------------------------------------------------------------------


def test_csv_round_trip_schema_digests_and_encryption(store: Path, dek: DataKey) -> None:
    data = make_csv(300)
    result = _ingest(data, store, dek, views=[MockViewBuilder(rows=50, seed=1)])
    assert result.rows == 300 and result.bytes_in == len(data) and result.format == "csv"
    assert result.content_digest == "sha256:" + hashlib.sha256(data).hexdigest()
    stored = (store / "data.enc").read_bytes()
    assert result.stored_digest == "sha256:" + hashlib.sha256(stored).hexdigest()
    assert result.stored_bytes == len(stored)
    assert b"paris" not in stored and b"city" not in stored
    assert (store / "data.enc").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in store.iterdir()] == ["data.enc"]

    types = {c.name: c.type for c in result.schema.columns}
    assert types == {
        "id": "int", "age": "int", "city": "category", "score": "float",
        "day": "date", "flag": "bool", "note": "string",
    }
    assert result.schema.column("note").nullable and not result.schema.column("id").nullable
    assert result.schema.column("note").stats.null_count == 30

    frame = load_frame(store / "data.enc", dek, context=CTX)
    assert len(frame) == 300
    assert frame["id"].tolist() == list(range(300))
    assert frame["city"].iloc[1] == "lyon"
    assert frame["day"].iloc[0] == dt.date(2024, 1, 1)
    assert set(result.views) == {"mock"} and len(result.views["mock"]) == 50


def test_multi_block_csv_streams(store: Path, dek: DataKey) -> None:
    data = make_csv(5000)
    result = _ingest(data, store, dek, csv_block_size=4096)
    assert result.rows == 5000
    batches = list(read_dataset(store / "data.enc", dek, context=CTX))
    assert len(batches) > 10
    assert sum(b.num_rows for b in batches) == 5000


def test_column_null_in_first_block_is_read_as_string(store: Path, dek: DataKey) -> None:
    lines = ["a,b"] + [f"{i}," for i in range(200)] + [f"{i},late" for i in range(5)]
    result = _ingest(("\n".join(lines) + "\n").encode(), store, dek, csv_block_size=512)
    assert result.schema.column("b").type in ("string", "category")
    frame = load_frame(store / "data.enc", dek, context=CTX)
    assert frame["b"].iloc[-1] == "late"


def test_later_block_type_conflict_fails_clearly(store: Path, dek: DataKey) -> None:
    lines = ["id,amount"] + [f"{i},{i}" for i in range(300)] + ["300,SECRET-VALUE"]
    with pytest.raises(MalformedUpload) as info:
        _ingest(("\n".join(lines) + "\n").encode(), store, dek, csv_block_size=512)
    msg = str(info.value)
    assert "'amount'" in msg and "schema section" in msg and "SECRET-VALUE" not in msg
    _assert_nothing_stored(store)


def test_declared_type_in_policy_avoids_conflict(store: Path, dek: DataKey) -> None:
    lines = ["id,amount"] + [f"{i},{i}" for i in range(300)] + ["300,2.5"]
    policy = parse_policy(
        "[[schema.columns]]\nname = 'amount'\ntype = 'float'", format="toml"
    )
    result = _ingest(
        ("\n".join(lines) + "\n").encode(), store, dek, csv_block_size=512, policy=policy
    )
    assert result.schema.column("amount").type == "float"
    assert load_frame(store / "data.enc", dek, context=CTX)["amount"].iloc[-1] == 2.5


@pytest.mark.parametrize("seekable", [True, False])
def test_parquet_round_trip_and_type_normalisation(
    store: Path, dek: DataKey, seekable: bool
) -> None:
    n = 2000
    table = pa.table({
        "i32": pa.array(range(n), pa.int32()),
        "dec": pa.array([decimal.Decimal(i) / 4 for i in range(n)], pa.decimal128(10, 2)),
        "cat": pa.array([["x", "y"][i % 2] for i in range(n)]).dictionary_encode(),
        "ts": pa.array([dt.datetime(2024, 1, 1) + dt.timedelta(hours=i) for i in range(n)]),
        "f": pa.array([None if i % 5 == 0 else i / 3 for i in range(n)], pa.float32()),
    })
    raw = _parquet(table, row_group_size=300)
    src: Any = io.BytesIO(raw) if seekable else Unseekable(raw)
    result = _ingest(src, store, dek, filename="t.parquet", views=[MockViewBuilder(rows=10)])
    assert result.rows == n and result.format == "parquet"
    assert result.content_digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    types = {c.name: c.type for c in result.schema.columns}
    assert types == {"i32": "int", "dec": "float", "cat": "category", "ts": "datetime",
                     "f": "float"}
    frame = load_frame(store / "data.enc", dek, context=CTX)
    assert frame["i32"].dtype == "int64" and frame["dec"].iloc[3] == 0.75
    assert frame["cat"].iloc[1] == "y"
    assert [p.name for p in store.iterdir()] == ["data.enc"]  # spool removed


def test_stored_data_bound_to_key_and_context(store: Path, dek: DataKey) -> None:
    _ingest(make_csv(50), store, dek)
    path = store / "data.enc"
    with pytest.raises(IntegrityError):
        load_frame(path, dek, context=b"veil/dataset/ds-2/data")
    with pytest.raises(IntegrityError):
        load_frame(path, DataKey.generate(), context=CTX)
    blob = path.read_bytes()
    path.write_bytes(blob[:-20])
    with pytest.raises(IntegrityError):
        load_frame(path, dek, context=CTX)


def test_refuses_to_overwrite(store: Path, dek: DataKey) -> None:
    _ingest(make_csv(10), store, dek)
    with pytest.raises(CatalogError, match="already exists"):
        _ingest(make_csv(10), store, dek)


# -- bad input: each refuses and leaves nothing stored --------------------------------------


@pytest.mark.parametrize(
    ("data", "filename", "error"),
    [
        (b"", "x.csv", MalformedUpload),
        (b"", "x.parquet", MalformedUpload),
        (b"a,b,c\n", "x.csv", MalformedUpload),
        (b"a,b\n1,2\n3,4,SECRET\n", "x.csv", MalformedUpload),
        (b"a,a\n1,2\n", "x.csv", MalformedUpload),
        (b"a,,c\n1,2,3\n", "x.csv", MalformedUpload),
        (b"a,b\n1,2\n", "x.xlsx", UnsupportedFormat),
        (b"a,b\n1,2\n", "noext", UnsupportedFormat),
        (b"a,b\n1,2\n", "x.parquet", UnsupportedFormat),
        (b"PK\x03\x04rest-of-zip", "x.csv", UnsupportedFormat),
        (b"a,b\n1,\x00\n", "x.csv", UnsupportedFormat),
        (b"a,b\n1,\xff\xfe\n", "x.csv", UnsupportedFormat),
        (b"PAR1" + b"\x00" * 100, "x.parquet", MalformedUpload),
    ],
    ids=[
        "empty-csv", "empty-parquet", "header-only", "ragged-row", "dup-header", "empty-name",
        "xlsx", "no-extension", "csv-named-parquet", "zip-named-csv", "nul-bytes",
        "not-utf8", "corrupt-parquet",
    ],
)
def test_bad_inputs(
    store: Path, dek: DataKey, data: bytes, filename: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        _ingest(data, store, dek, filename=filename, views=[MockViewBuilder()])
    assert "SECRET" not in str(info.value)
    _assert_nothing_stored(store)


def test_parquet_named_csv(store: Path, dek: DataKey) -> None:
    raw = _parquet(pa.table({"a": [1, 2]}))
    with pytest.raises(UnsupportedFormat, match="Parquet"):
        _ingest(raw, store, dek, filename="x.csv")
    _assert_nothing_stored(store)


def test_truncated_parquet(store: Path, dek: DataKey) -> None:
    raw = _parquet(pa.table({"a": list(range(1000))}))
    with pytest.raises(MalformedUpload):
        _ingest(raw[: len(raw) // 2], store, dek, filename="x.parquet")
    _assert_nothing_stored(store)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("seekable", [True, False])
def test_upload_over_limit(store: Path, dek: DataKey, fmt: str, seekable: bool) -> None:
    data = make_csv(2000) if fmt == "csv" else _parquet(pa.table({"a": list(range(20000))}))
    src: Any = io.BytesIO(data) if seekable else Unseekable(data)
    with pytest.raises(UploadTooLarge, match=str(len(data) - 1)):
        _ingest(src, store, dek, filename=f"x.{fmt}", max_bytes=len(data) - 1,
                 views=[MockViewBuilder()], csv_block_size=4096)
    _assert_nothing_stored(store)


def test_limit_exactly_at_size_is_accepted(store: Path, dek: DataKey) -> None:
    data = make_csv(100)
    assert _ingest(data, store, dek, max_bytes=len(data)).rows == 100


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ("[[schema.columns]]\nname = 'income'", "missing required column 'income'"),
        ("[schema]\nforbidden = ['note']", "'note' is forbidden"),
        ("[schema]\nallow_extra = false\n[[schema.columns]]\nname = 'id'", "not allowed"),
        ("[[schema.columns]]\nname = 'day'\ntype = 'int'", "'day' is date, policy expects int"),
        ("[[schema.columns]]\nname = 'note'\nnullable = false", "'note' has nulls"),
        ("[[schema.columns]]\nname = 'flag'\ntype = 'int'", "'flag' is bool"),
    ],
)
def test_schema_rejected_by_policy(store: Path, dek: DataKey, policy: str, problem: str) -> None:
    with pytest.raises(SchemaRejected) as info:
        _ingest(make_csv(50), store, dek, policy=parse_policy(policy, format="toml"))
    assert any(problem in p for p in info.value.problems), info.value.problems
    _assert_nothing_stored(store)


def test_later_value_violating_declared_type_is_schema_rejection(
    store: Path, dek: DataKey
) -> None:
    lines = ["id,amount"] + [f"{i},{i}" for i in range(300)] + ["300,SECRET"]
    policy = parse_policy("[[schema.columns]]\nname = 'amount'\ntype = 'int'", format="toml")
    with pytest.raises(SchemaRejected) as info:
        _ingest(("\n".join(lines) + "\n").encode(), store, dek, csv_block_size=512,
                policy=policy)
    assert "'amount'" in str(info.value) and "SECRET" not in str(info.value)
    _assert_nothing_stored(store)


def test_parquet_type_mismatch_is_schema_rejection(store: Path, dek: DataKey) -> None:
    raw = _parquet(pa.table({"a": ["x", "y"]}))
    policy = parse_policy("[[schema.columns]]\nname = 'a'\ntype = 'int'", format="toml")
    with pytest.raises(SchemaRejected, match="'a' is"):
        _ingest(raw, store, dek, filename="x.parquet", policy=policy)
    _assert_nothing_stored(store)


def test_schema_accepted_with_compatible_spec(store: Path, dek: DataKey) -> None:
    policy = parse_policy(
        "[schema]\nforbidden = ['ssn']\n"
        "[[schema.columns]]\nname = 'city'\ntype = 'string'\n"
        "[[schema.columns]]\nname = 'id'\ntype = 'int'\nnullable = false\n",
        format="toml",
    )
    result = _ingest(make_csv(50), store, dek, policy=policy)
    assert result.schema.column("city").type == "string"  # declared type wins


def test_sample_view_requires_policy_opt_in(store: Path, dek: DataKey) -> None:
    with pytest.raises(ViewUnavailable, match="publishable"):
        _ingest(make_csv(50), store, dek, views=[SampleViewBuilder(rows=5)])
    policy = parse_policy("[views.sample]\npublishable = false", format="toml")
    with pytest.raises(ViewUnavailable):
        _ingest(make_csv(50), store, dek, views=[SampleViewBuilder(rows=5)], policy=policy)
    _assert_nothing_stored(store)
    ok = parse_policy("[views.sample]\npublishable = true\nrows = 5", format="toml")
    result = _ingest(make_csv(50), store, dek, views=view_builders_for(ok, seed=2), policy=ok)
    assert set(result.views) == {"mock", "sample"} and len(result.views["sample"]) == 5


def test_view_failure_leaves_nothing(store: Path, dek: DataKey) -> None:
    class Broken:
        name = "broken"

        def observe(self, batch: pa.RecordBatch) -> None:
            pass

        def build(self, schema: Any) -> Any:
            raise RuntimeError("view failed")

    with pytest.raises(RuntimeError):
        _ingest(make_csv(50), store, dek, views=[Broken()])
    _assert_nothing_stored(store)


def test_quoted_newlines_across_blocks(store: Path, dek: DataKey) -> None:
    rows = [f'{i},"line one\nline two {i}",{i * 2}' for i in range(400)]
    data = ("id,text,n\n" + "\n".join(rows) + "\n").encode()
    result = _ingest(data, store, dek, csv_block_size=1024)
    assert result.rows == 400
    frame = load_frame(store / "data.enc", dek, context=CTX)
    assert frame["text"].iloc[399] == "line one\nline two 399"
    assert frame["n"].iloc[399] == 798


def test_row_longer_than_block_is_malformed(store: Path, dek: DataKey) -> None:
    data = b"a,b\n" + b"1," + b"x" * 5000 + b"\n" + b"2,y\n" * 10
    with pytest.raises(MalformedUpload):
        _ingest(data, store, dek, csv_block_size=1024)
    _assert_nothing_stored(store)


def test_spooled_upload_file_like_fastapi(store: Path, dek: DataKey) -> None:
    import tempfile

    raw = _parquet(pa.table({"a": list(range(100))}))
    for max_size in (16, 1 << 20):  # rolled over to disk, and still in memory
        with tempfile.SpooledTemporaryFile(max_size=max_size) as spooled:
            spooled.write(raw)
            spooled.seek(0)
            dest = store / f"d{max_size}.enc"
            result = ingest(spooled, filename="x.parquet", max_bytes=len(raw), dest=dest,
                            dek=dek, context=CTX)
        assert result.rows == 100
    assert sorted(p.name for p in store.iterdir()) == ["d1048576.enc", "d16.enc"]


@pytest.mark.slow
def test_million_rows_end_to_end(store: Path, dek: DataKey) -> None:
    data = make_csv(1_000_000)
    policy = parse_policy("[views.sample]\npublishable = true\nrows = 1000", format="toml")
    result = _ingest(data, store, dek, max_bytes=len(data), policy=policy,
                     views=view_builders_for(policy, seed=0))
    assert result.rows == 1_000_000
    assert len(result.views["mock"]) == 1000 and len(result.views["sample"]) == 1000
    total = sum(b.num_rows for b in read_dataset(store / "data.enc", dek, context=CTX))
    assert total == 1_000_000
