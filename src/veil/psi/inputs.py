"""Reading a party's table and identifier hygiene (spec §11.2 preconditions).

Emails are trimmed and lower-cased, phone numbers reduced to digits (a leading + or 00 kept as
+), other IDs trimmed. CSV cells are text: no value ("NA", "null", …) is read as missing.
An empty ID in one column becomes b"" (the session replaces it with a random placeholder that
matches nothing); a row with no ID in any column is refused. Duplicate IDs within a column
are refused: they would let one record mark several of the other's rows and break the
protocol.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from veil.psi.errors import InputError
from veil.psi.session import PartyData

_NON_DIGIT = re.compile(r"\D")


def normalise_email(value: str) -> str:
    return value.strip().lower()


def normalise_phone(value: str) -> str:
    v = value.strip()
    plus = v.startswith("+") or v.startswith("00")
    digits = _NON_DIGIT.sub("", v)
    if v.startswith("00"):
        digits = digits[2:]
    return ("+" + digits) if plus and digits else digits


def _normaliser(column: str) -> str:
    name = column.lower()
    if "mail" in name:
        return "email"
    if any(t in name for t in ("phone", "mobile", "tel")):
        return "phone"
    return "plain"


def normalise_ids(column: str, values: Sequence[object]) -> list[bytes]:
    """Normalise one ID column; refuses duplicates (the message names the column, not values)."""
    kind = _normaliser(column)
    out: list[bytes] = []
    for v in values:
        s = "" if v is None else str(v)
        if kind == "email":
            s = normalise_email(s)
        elif kind == "phone":
            s = normalise_phone(s)
        else:
            s = s.strip()
        out.append(s.encode())
    present = [v for v in out if v]
    dupes = len(present) - len(set(present))
    if dupes:
        raise InputError(f"ID column {column!r} has {dupes} duplicate value(s) after normalisation")
    return out


_MAX_FEATURE = (1 << 64) - 1
_RANGE = "features must be integers in [0, 2^64 - 1]"


def read_party_data(path: Path, ids: Sequence[str], features: Sequence[str]) -> PartyData:
    """Read only the needed columns of a CSV or Parquet file into PartyData.

    CSV cells are read as text with no null markers: pyarrow's defaults read "NA", "null",
    "N/A", "NaN", "#N/A" … as missing, and such IDs would silently never match. Features are
    parsed from that text, so the whole uint64 range is exact (inference would turn values
    >= 2^63 into floats). Rows with no ID in any column are refused: they can match nothing.
    """
    import pyarrow as pa

    if not ids:
        raise InputError("at least one ID column is required")
    wanted = [*ids, *features]
    if len(set(wanted)) != len(wanted):
        raise InputError("a column is listed twice in --ids/--features")
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=wanted)
        else:
            from pyarrow import csv

            table = csv.read_csv(
                path,
                convert_options=csv.ConvertOptions(
                    include_columns=wanted,
                    column_types={c: pa.string() for c in wanted},
                    strings_can_be_null=False,
                    null_values=[],
                    quoted_strings_can_be_null=False,
                ),
            )
    except FileNotFoundError:
        raise InputError(f"input file {path} does not exist") from None
    except (pa.ArrowInvalid, KeyError, OSError) as exc:
        msg = str(exc).splitlines()[0][:200]
        raise InputError(f"cannot read {path.name}: {msg}") from None
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise InputError(f"columns not found in {path.name}: {', '.join(missing)}")
    id_cols = [normalise_ids(c, table.column(c).to_pylist()) for c in ids]
    empty = [i for i, row in enumerate(zip(*id_cols, strict=True)) if not any(row)]
    if empty:
        where = ", ".join(str(i + 2) for i in empty[:5]) + (" …" if len(empty) > 5 else "")
        raise InputError(
            f"{len(empty)} of {table.num_rows} rows of {path.name} have no ID in any of "
            f"{', '.join(ids)} (file lines {where}); such rows can never match — remove them")
    feats = np.zeros((table.num_rows, len(features)), dtype=np.uint64)
    for j, c in enumerate(features):
        feats[:, j] = _feature_column(c, table.column(c))
    return PartyData(id_cols, feats, tuple(features))


def _feature_column(name: str, col: object) -> np.ndarray:
    """One feature column as uint64; the error says what is wrong and the supported range."""
    import pyarrow as pa
    import pyarrow.compute as pc

    assert isinstance(col, pa.ChunkedArray)
    if col.null_count:
        raise InputError(f"feature column {name!r} has missing values")
    if pa.types.is_boolean(col.type):
        return np.asarray(col.to_pylist(), dtype=np.uint64)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        text = pc.utf8_trim_whitespace(col)
        lowered = set(pc.unique(pc.utf8_lower(text)).to_pylist())
        if lowered and lowered <= {"true", "false"}:
            return np.asarray(pc.equal(pc.utf8_lower(text), "true").to_pylist(), dtype=np.uint64)
        try:
            return np.asarray(pc.cast(text, pa.uint64()).to_numpy(), dtype=np.uint64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            for row, value in enumerate(text.to_pylist()):
                _check_feature(name, row, value)
            raise InputError(f"feature column {name!r}: {_RANGE}") from None
    if pa.types.is_unsigned_integer(col.type):
        return np.asarray(col.to_numpy(), dtype=np.uint64)
    if pa.types.is_integer(col.type):
        arr = col.to_numpy()
        if arr.size and arr.min() < 0:
            raise InputError(f"feature column {name!r} has negative values; {_RANGE}")
        return arr.astype(np.uint64)
    raise InputError(f"feature column {name!r} holds {col.type}, not integers; {_RANGE}")


def _check_feature(name: str, row: int, value: str) -> None:
    where = f"feature column {name!r}, row {row + 1}"
    if value == "":
        raise InputError(f"{where}: missing value ({_RANGE})")
    try:
        number = int(value)
    except ValueError:
        raise InputError(f"{where}: {value[:40]!r} is not an integer; {_RANGE}") from None
    if number < 0:
        raise InputError(f"{where}: negative value {number}; {_RANGE}")
    if number > _MAX_FEATURE:
        raise InputError(f"{where}: {number} is 2^64 or more; {_RANGE}")


_META = "# veil-psi shares v1"


def write_shares(path: Path, names: Sequence[str], shares: np.ndarray, *, tau: int = 0,
                 zero_columns: Sequence[str] = ()) -> None:
    """Write one party's shares as CSV (header = share names), atomically.

    A first comment line records tau and this party's zero column, so that `reveal` knows
    whether rows include dummy matches (whose features are random) and how to leave them out.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{_META}; tau={tau}; zero_column={'|'.join(zero_columns)}\n")
        fh.write(",".join(names) + "\n")
        for row in shares.tolist():
            fh.write(",".join(str(v) for v in row) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Revealed:
    """Two share files put together.

    `rows` counts every matched row (real and dummy). With dummies (tau > 0), sums are taken
    only over rows where every declared zero column is non-zero (`real_rows` of them), since
    dummy rows carry random uint64 features; with dummies and no zero column they are refused
    (`refused` says why, `sums` is empty).
    """

    rows: int
    tau: int
    zero_columns: tuple[str, ...]
    real_rows: int
    sums: dict[str, int]
    refused: str | None = None


def load_share_file(p: Path) -> tuple[int | None, list[str], list[str], list[list[int]]]:
    """One party's share CSV: (tau or None if unrecorded, zero columns, header, rows)."""
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror}") from None
    tau: int | None = None
    zeros: list[str] = []
    if lines and lines[0].startswith("#"):
        meta = dict(part.strip().partition("=")[::2] for part in lines.pop(0).split(";")[1:])
        try:
            tau = int(meta.get("tau", ""))
        except ValueError:
            raise InputError(f"{p.name} has a malformed header line") from None
        zeros = [z for z in meta.get("zero_column", "").split("|") if z]
    if not lines:
        raise InputError(f"{p.name} is empty")
    header = lines[0].split(",") if lines[0] else []
    try:
        rows = [[int(x) for x in line.split(",")] if line else [] for line in lines[1:]]
    except ValueError:
        raise InputError(f"{p.name} is not a share file") from None
    if any(len(r) != len(header) or any(not 0 <= x < 2**64 for x in r) for r in rows):
        raise InputError(f"{p.name} is not a share file")
    if any(z not in header for z in zeros):
        raise InputError(f"{p.name} declares a zero column it does not have")
    return tau, zeros, header, rows


def reveal(a: Path, b: Path) -> Revealed:
    """Reconstruct two parties' share files: sizes and the sum of each feature."""
    load = load_share_file
    ta, za, ha, ra = load(a)
    tb, zb, hb, rb = load(b)
    if ha != hb or len(ra) != len(rb) or (ta is not None and tb is not None and ta != tb):
        raise InputError("the two share files do not belong to the same run")
    tau = ta if ta is not None else tb
    zeros = tuple(dict.fromkeys(za + zb))
    values = [[(u + v) % 2**64 for u, v in zip(x, y, strict=True)] for x, y in zip(ra, rb,
                                                                                    strict=True)]
    dummies = tau is None or tau > 0  # files that do not record tau: cannot rule them out
    if dummies and ha and not zeros:
        why = (f"the run added dummy rows (tau={tau})" if tau is not None
               else "these share files do not record tau, so dummy rows cannot be ruled out")
        refused = (
            f"sums refused: {why}; dummy matches among the {len(values)} rows carry random "
            "uint64 features, so any sum would be garbage. Re-run with --zero-column naming a "
            "0/1 'is real' feature (1 on real rows): dummy rows carry 0 there and are left out.")
        return Revealed(len(values), tau or 0, zeros, 0, {}, refused)
    index = [ha.index(z) for z in zeros]
    kept = [row for row in values if all(row[i] for i in index)] if dummies else values
    sums = {name: sum(row[j] for row in kept) for j, name in enumerate(ha)}
    return Revealed(len(values), tau or 0, zeros, len(kept), sums)
