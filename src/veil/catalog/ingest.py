"""Streamed ingest: parse CSV/Parquet, infer + validate the schema, build stage-1 views and
write the data encrypted at rest, all in one pass with bounded memory.

Stored format: an Arrow IPC stream (normalised types, LZ4-compressed buffers) inside the
chunked AEAD of :mod:`veil.crypto.envelope`. IPC streams need no seeking, so they can be
written and read through the encrypting/decrypting streams.

Digests in :class:`IngestResult`:

* ``content_digest`` is SHA-256 over the raw upload bytes exactly as received, so a provider
  can check it against ``sha256sum`` of their file.
* ``stored_digest`` is SHA-256 over the encrypted file as stored: the input a launcher can
  measure into an input manifest without holding the data key.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from veil.catalog.errors import (
    CatalogError,
    MalformedUpload,
    SchemaRejected,
    UnsupportedFormat,
    UploadTooLarge,
    ViewUnavailable,
)
from veil.catalog.joinkeys import UniqueKeyCheck, join_key_problems
from veil.catalog.policy import DatasetPolicy
from veil.catalog.schema import (
    ColumnType,
    Schema,
    SchemaInferrer,
    arrow_type_for,
    check_arrow_schema,
    logical_type,
    storage_type,
    validate,
)
from veil.catalog.views import ViewBuilder
from veil.crypto.envelope import DataKey, DecryptingReader, EncryptingWriter

__all__ = ["IngestResult", "ingest", "load_frame", "read_dataset"]

Format = Literal["csv", "parquet"]

_EXTENSIONS: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_PARQUET_MAGIC = b"PAR1"
_BINARY_MAGIC = (
    b"PK\x03\x04", b"\x1f\x8b", b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"BZh", b"\xfd7zXZ"
)
_READ = 1 << 20
_BATCH_ROWS = 65_536
_SPOOL_CONTEXT = b"|upload-spool"


@dataclass(frozen=True)
class IngestResult:
    """What an upload produced. ``schema`` includes provider-side stats (use ``.public()``)."""

    schema: Schema
    rows: int
    bytes_in: int
    content_digest: str
    stored_digest: str
    stored_bytes: int
    format: Format
    views: dict[str, pd.DataFrame] = field(default_factory=dict)


class _Upload(io.RawIOBase):
    """Reads the upload once: counts bytes against the limit and hashes them as they pass."""

    def __init__(self, source: IO[bytes], max_bytes: int) -> None:
        super().__init__()
        self._src = source
        self._max = max_bytes
        self.total = 0
        self.sha = hashlib.sha256()
        self._head = b""

    def readable(self) -> bool:
        return True

    def peek_head(self, n: int) -> bytes:
        """Read ahead up to ``n`` bytes; they are served again by later reads."""
        while len(self._head) < n:
            got = self._pull(n - len(self._head))
            if not got:
                break
            self._head += got
        return self._head[:n]

    def _pull(self, n: int) -> bytes:
        data = self._src.read(n)
        if not data:
            return b""
        self.total += len(data)
        if self.total > self._max:
            raise UploadTooLarge(f"upload exceeds the limit of {self._max} bytes")
        self.sha.update(data)
        return bytes(data)

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        if self._head:
            n = min(len(out), len(self._head))
            out[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._pull(len(out))
        out[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(_READ):
            pass


class _HashingSink(io.RawIOBase):
    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self._out = out
        self.sha = hashlib.sha256()
        self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.sha.update(data)
        self.total += len(data)
        self._out.write(data)
        return len(data)


def _detect_format(filename: str, head: bytes) -> Format:
    ext = os.path.splitext(filename)[1].lower()
    fmt = _EXTENSIONS.get(ext)
    if fmt is None:
        raise UnsupportedFormat(
            f"unsupported file type {ext or '(no extension)'!r}; upload .csv or .parquet"
        )
    if not head:
        raise MalformedUpload("the upload is empty")
    is_parquet = head.startswith(_PARQUET_MAGIC)
    if fmt == "parquet" and not is_parquet:
        raise UnsupportedFormat("file is named as Parquet but is not a Parquet file")
    if fmt == "csv":
        if is_parquet:
            raise UnsupportedFormat("file is named as CSV but is a Parquet file")
        if head.startswith(_BINARY_MAGIC) or b"\x00" in head:
            raise UnsupportedFormat("file is named as CSV but is binary, not text")
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            raise UnsupportedFormat("CSV must be UTF-8 text") from None
    return fmt


_COLS_RE = re.compile(r"Expected (\d+) columns, got (\d+)")
_CONV_RE = re.compile(r"In CSV column #(\d+):(?: Row #\d+:)? CSV conversion error to (\w+)")


def _csv_error(
    exc: pa.ArrowException,
    names: Sequence[str],
    types: dict[str, str],
    declared: dict[str, ColumnType] | None = None,
) -> CatalogError:
    """Translate a pyarrow CSV error without quoting the offending data."""
    msg = str(exc)
    m = _COLS_RE.search(msg)
    if m:
        return MalformedUpload(
            f"malformed CSV: a row has {m.group(2)} fields but the header has {m.group(1)}"
        )
    m = _CONV_RE.search(msg)
    if m:
        idx = int(m.group(1))
        name = names[idx] if idx < len(names) else f"#{idx}"
        if "UTF8" in msg or "utf8" in msg.lower():
            return MalformedUpload(f"column {name!r} contains invalid UTF-8")
        kind = types.get(name, m.group(2))
        if declared and name in declared:
            return SchemaRejected([f"column {name!r} has a value that is not {declared[name]}"])
        return MalformedUpload(
            f"column {name!r}: a later value does not fit the type {kind} inferred from the "
            "first rows; declare the column's type in the policy's schema section"
        )
    if "UTF8" in msg or "UTF-8" in msg:
        return MalformedUpload("CSV contains invalid UTF-8")
    return MalformedUpload("malformed CSV (could not be parsed)")


_READABLE_AS: dict[str, set[str]] = {
    "int": {"int", "float", "string", "category"},
    "float": {"float", "string", "category"},
    "bool": {"bool", "string", "category"},
    "date": {"date", "datetime", "string", "category"},
    "datetime": {"datetime", "string", "category"},
    "string": {"string", "category"},
}


def _readable_as(inferred: pa.DataType, declared: ColumnType, column: str) -> bool:
    """May CSV text inferred as ``inferred`` be read with the policy's declared type?"""
    if pa.types.is_null(inferred):
        return True
    kind = logical_type(inferred, column=column)
    return declared in _READABLE_AS.get(kind, {kind})


def _csv_batches(
    upload: _Upload, declared: dict[str, ColumnType], block_size: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Infer column types from the first block, then stream everything with those types fixed.

    pyarrow infers per reader from its first block; fixing the types explicitly makes a later
    conflict a clear error naming the column, instead of a silent re-typing.
    """
    head = upload.peek_head(block_size)
    more = len(head) == block_size
    parse = pacsv.ParseOptions(newlines_in_values=True)
    read_opts = pacsv.ReadOptions(block_size=block_size, use_threads=False)
    # Infer from the first half of the read-ahead: when more data follows, pyarrow's chunker
    # ends that block on a real row boundary (quote-aware), so a row cut by the read-ahead
    # never reaches inference.
    infer_opts = pacsv.ReadOptions(
        block_size=max(block_size // 2, 1) if more else len(head) + 1, use_threads=False
    )
    try:
        first_schema = pacsv.open_csv(
            io.BytesIO(head),
            read_options=infer_opts,
            parse_options=parse,
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        ).schema
    except pa.ArrowInvalid as exc:
        raise _csv_error(exc, [], {}) from None
    names = first_schema.names
    if any(not n.strip() for n in names):
        raise MalformedUpload("CSV header has an empty column name")
    if len(set(names)) != len(names):
        raise MalformedUpload("CSV header repeats a column name")
    types: dict[str, pa.DataType] = {}
    kinds: dict[str, str] = {}
    problems = []
    for f in first_schema:
        if f.name in declared and not _readable_as(f.type, declared[f.name], f.name):
            found = logical_type(f.type, column=f.name)
            problems.append(f"column {f.name!r} is {found}, policy expects {declared[f.name]}")
        if f.name in declared:
            types[f.name] = arrow_type_for(declared[f.name])
            kinds[f.name] = declared[f.name]
        else:
            types[f.name] = storage_type(f.type, column=f.name)
            kinds[f.name] = str(types[f.name])
    if problems:
        raise SchemaRejected(problems)
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    try:
        reader = pacsv.open_csv(
            upload, read_options=read_opts, parse_options=parse, convert_options=convert
        )
    except pa.ArrowInvalid as exc:
        raise _csv_error(exc, names, kinds) from None

    def batches() -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise _csv_error(exc, names, kinds, declared) from None
            yield batch

    return reader.schema, batches()


def _parquet_source(upload: _Upload, source: IO[bytes], tmp_dir: Path, dek: DataKey,
                    context: bytes, cleanup: list[Path]) -> Any:
    """A seekable view of the Parquet upload (footers live at the end of the file).

    A seekable source is hashed in one pass and then read in place. A non-seekable one is
    spooled to disk *encrypted* under the data key, so plaintext never touches the disk.
    """
    seekable = False
    with contextlib.suppress(AttributeError, ValueError, OSError):
        seekable = bool(source.seekable())
    if seekable and source.tell() == upload.total:  # the upload starts at offset 0
        upload.drain()
        source.seek(0)
        return source
    spool = tmp_dir / f".{secrets.token_hex(8)}.spool"
    cleanup.append(spool)
    with open(spool, "xb") as f:
        os.chmod(spool, 0o600)
        with EncryptingWriter(f, dek, context=context + _SPOOL_CONTEXT) as w:
            while chunk := upload.read(_READ):
                w.write(chunk)
    return DecryptingReader(open(spool, "rb"), dek, context=context + _SPOOL_CONTEXT)


def _parquet_batches(src: Any) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    try:
        pf = pq.ParquetFile(src)
        in_schema = pf.schema_arrow
    except (pa.ArrowException, OSError):
        raise MalformedUpload("not a readable Parquet file") from None
    names = in_schema.names
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise MalformedUpload("Parquet column names must be unique and non-empty")
    out_schema = pa.schema(
        [pa.field(f.name, storage_type(f.type, column=f.name)) for f in in_schema]
    )

    def batches() -> Iterator[pa.RecordBatch]:
        it = pf.iter_batches(batch_size=_BATCH_ROWS)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except (pa.ArrowException, OSError):
                raise MalformedUpload("Parquet data is corrupt or truncated") from None
            arrays = []
            for f, arr in zip(out_schema, batch.columns, strict=True):
                try:
                    arrays.append(arr.cast(f.type) if arr.type != f.type else arr)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise MalformedUpload(
                        f"column {f.name!r} has values that do not fit {f.type}"
                    ) from None
            yield pa.RecordBatch.from_arrays(arrays, schema=out_schema)

    return out_schema, batches()


def _check_views(views: Sequence[ViewBuilder], policy: DatasetPolicy | None) -> None:
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        raise ViewUnavailable("each view may be built only once per upload")
    if "sample" in names:
        spec = policy.views.sample if policy is not None else None
        if spec is None or not spec.publishable:
            raise ViewUnavailable(
                "the sample view needs the policy opt-in views.sample.publishable = true"
            )


def ingest(
    source: IO[bytes],
    *,
    filename: str,
    max_bytes: int,
    dest: Path,
    dek: DataKey,
    context: bytes,
    views: Sequence[ViewBuilder] = (),
    policy: DatasetPolicy | None = None,
    csv_block_size: int = 1 << 20,
) -> IngestResult:
    """Stream an upload into ``dest`` encrypted, returning its schema, digests and views.

    On any error nothing is left at ``dest`` and every temporary file is removed. ``dest``
    must not exist yet (stored datasets are immutable).
    """
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")
    dest = Path(dest)
    if dest.exists():
        raise CatalogError("destination already exists; stored datasets are immutable")
    _check_views(views, policy)
    spec = policy.schema_spec if policy is not None else None
    declared = {c.name: c.type for c in spec.columns if c.type is not None} if spec else {}

    upload = _Upload(source, max_bytes)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(8)}.partial"
    cleanup: list[Path] = [tmp]
    to_close: list[Any] = []
    try:
        fmt = _detect_format(filename, upload.peek_head(8192))
        if fmt == "csv":
            arrow_schema, batches = _csv_batches(upload, declared, csv_block_size)
        else:
            src = _parquet_source(upload, source, dest.parent, dek, context, cleanup)
            to_close.append(src)
            arrow_schema, batches = _parquet_batches(src)
        if spec is not None:
            problems = check_arrow_schema(arrow_schema, spec)
            if problems:
                raise SchemaRejected(problems)
        if policy is not None and policy.join_keys:
            problems = join_key_problems(arrow_schema, policy.join_keys)
            if problems:
                raise SchemaRejected(problems)
        inferrer = SchemaInferrer(arrow_schema, declared)
        unique = UniqueKeyCheck(policy.join_keys) \
            if policy is not None and policy.join_one_to_one else None
        rows = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw:
            sink = _HashingSink(raw)
            with EncryptingWriter(sink, dek, context=context) as enc:  # type: ignore[arg-type]
                opts = pa.ipc.IpcWriteOptions(compression="lz4")
                with pa.ipc.new_stream(enc, arrow_schema, options=opts) as writer:
                    for batch in batches:
                        if batch.num_rows == 0:
                            continue
                        rows += batch.num_rows
                        _check_finite(batch)
                        inferrer.observe(batch)
                        if unique is not None:
                            unique.observe(batch)
                        for view in views:
                            view.observe(batch)
                        writer.write_batch(batch)
            raw.flush()
            os.fsync(raw.fileno())
        if upload.total == 0:
            raise MalformedUpload("the upload is empty")
        if rows == 0:
            raise MalformedUpload("the upload has a header but no data rows")
        schema = inferrer.finish()
        if spec is not None:
            validate(schema, spec)
        if unique is not None and (repeated := unique.problems()):
            raise SchemaRejected(repeated)
        built = {view.name: view.build(schema) for view in views}
        os.link(tmp, dest)  # fails rather than overwrite if dest appeared meanwhile
        return IngestResult(
            schema=schema,
            rows=rows,
            bytes_in=upload.total,
            content_digest="sha256:" + upload.sha.hexdigest(),
            stored_digest="sha256:" + sink.sha.hexdigest(),
            stored_bytes=sink.total,
            format=fmt,
            views=built,
        )
    except pa.ArrowException:
        raise MalformedUpload("the upload could not be parsed") from None
    finally:
        for obj in to_close:
            if isinstance(obj, DecryptingReader):
                obj.close()
        for path in cleanup:
            path.unlink(missing_ok=True)


def _check_finite(batch: pa.RecordBatch) -> None:
    """Refuse ±inf in float columns.

    Nothing downstream has a meaning for them: a stage-1 view would have to publish an
    infinite range, schema statistics are JSON (which has no infinity; PostgreSQL refuses
    it), and DP clamping would silently turn them into a bound. The provider decides what
    they stand for (null, a cap) before uploading.
    """
    for col, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_floating(col.type) and pc.any(pc.is_inf(column)).as_py():
            raise MalformedUpload(f"column {col.name!r} has infinite values; replace them "
                                  "with empty cells (null) or a finite cap before uploading")


def read_dataset(path: Path, dek: DataKey, *, context: bytes) -> Iterator[pa.RecordBatch]:
    """Stream a stored dataset's record batches, verifying every chunk and the stream's end."""
    with open(path, "rb") as f:
        reader = DecryptingReader(f, dek, context=context)
        try:
            ipc = pa.ipc.open_stream(reader)
            yield from ipc
        except pa.ArrowInvalid:
            raise CatalogError("stored dataset is not a valid Arrow stream") from None
        if reader.read(1):
            raise CatalogError("stored dataset has trailing data after its Arrow stream")


def load_frame(path: Path, dek: DataKey, *, context: bytes) -> pd.DataFrame:
    """The whole stored dataset as a pandas DataFrame (for the secure stage's inputs)."""
    batches = list(read_dataset(path, dek, context=context))
    if not batches:
        raise CatalogError("stored dataset has no record batches")
    return pa.Table.from_batches(batches).to_pandas()
