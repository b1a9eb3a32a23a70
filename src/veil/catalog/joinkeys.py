"""Join keys in stage-1 views: keyed pseudonyms of a coordinated Poisson sample of real keys.

Without this a researcher cannot develop a cross-provider join on the views: a mock id is a
random number per dataset and a synthetic id carries nothing, so the join gives no rows (or a
null-by-null blow-up). A policy names its join keys (``join_keys = ["patient_id"]``); in the
views such a column holds ``HMAC-SHA256(collaboration key, real key)``, truncated to 53 bits
for integer columns and to 24 hex digits for string columns. The collaboration key is one per
platform (``LocalKeyring.collaboration_key``), so the same person gets the same pseudonym in
every provider's views, and it never leaves the server.

Which keys appear: each distinct real key is in the sample when a second keyed hash of it,
read as a number in [0, 1), is below ``join_sample_rate`` (q) — a Poisson sample with
probability q to anyone without the key. The sample is *coordinated*: it is the same people
in every dataset and every upload of the collaboration, so two providers' views overlap about
as much as their data does, and re-uploading reveals no one new. When more than ``rows`` keys
qualify, the ``rows`` smallest hashes are kept (a uniform subset). The mock and synthetic
views spread the sampled pseudonyms over their rows at random (a row's other values are not
the person's). The sample view's real rows carry pseudonyms under a throwaway key of their
own: never the real id, and never joinable (a match would say that this published person is
in the other provider's data).

What this discloses (not covered by any DP guarantee, and not claimed to be): to anyone
holding two mock/synthetic views, which pseudonyms — which sampled, unidentified people —
appear in both datasets, so the size of the sampled overlap, and about how many distinct keys
each dataset has (about q times it). A pseudonym is meaningless without the collaboration key,
which never leaves the server, and no view row that is a real record carries one. Keep q
small.
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from veil.catalog.schema import Schema
from veil.crypto.pseudonym import CollaborationKey

if TYPE_CHECKING:
    from veil.catalog.views import ViewBuilder

__all__ = ["JoinKeySample", "JoinKeyView", "join_key_problems", "pseudonym"]

_INT_BITS = 53  # exact in float64 and in JavaScript, so a pseudonym survives any client
_STR_HEX = 24


def _canonical(value: Any) -> str:
    # An integer key and its decimal text get the same tags, whatever the column's int width.
    return str(int(value)) if isinstance(value, int | np.integer) else str(value)


def pseudonym(key: CollaborationKey, value: Any, *, integer: bool) -> int | str:
    """The view's value for the real key ``value``: an int for int columns, else a string."""
    tag = key.tag("pseudonym", _canonical(value))
    if integer:
        return int.from_bytes(tag[:8], "big") >> (64 - _INT_BITS)
    return tag.hex()[:_STR_HEX]


def _rank(key: CollaborationKey, value: Any) -> float:
    """The key's sampling coordinate in [0, 1): independent of its pseudonym (another tag)."""
    return int.from_bytes(key.tag("sample", _canonical(value))[:8], "big") / 2.0**64


def join_key_problems(arrow_schema: pa.Schema, join_keys: Sequence[str]) -> list[str]:
    """Why the upload's columns cannot serve as the policy's join keys (names, never values)."""
    problems = []
    for name in join_keys:
        index = arrow_schema.get_field_index(name)
        if index < 0:
            problems.append(f"join key column {name!r} is not in the upload")
            continue
        t = arrow_schema.field(index).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            problems.append(f"join key column {name!r} must be an integer or string column")
    return problems


class UniqueKeyCheck:
    """Counts repeated values of join-key columns declared one-to-one (``join_one_to_one``).

    Keeps one 64-bit fingerprint per row (ints as themselves, strings by a per-process
    hash): 8 bytes a row, sorted once at the end. A hash collision could only report a
    repeat that is not there, never hide one. Nulls are not keys and are not counted.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        self._parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}

    def observe(self, batch: pa.RecordBatch) -> None:
        for column, parts in self._parts.items():
            arr = batch.column(column).drop_null()
            if pa.types.is_integer(arr.type):
                parts.append(arr.cast(pa.int64()).to_numpy(zero_copy_only=False))
            else:
                parts.append(np.fromiter((hash(v) for v in arr.to_pylist()), dtype=np.int64,
                                         count=len(arr)))

    def problems(self) -> list[str]:
        out = []
        for column, parts in self._parts.items():
            keys = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
            repeats = len(keys) - len(np.unique(keys))
            if repeats:
                out.append(f"join key column {column!r} is declared one-to-one "
                           f"(join_one_to_one = true) but {repeats:,} rows repeat a key "
                           "already seen")
        return out


class JoinKeySample:
    """A coordinated Poisson sample (rate ``q``) of one column's distinct keys, at most ``cap``.

    Bounded state: only keys below the current threshold are kept, pruned to the ``cap``
    smallest ranks whenever twice that many accumulate.
    """

    def __init__(self, key: CollaborationKey, *, q: float, cap: int) -> None:
        if not 0.0 < q <= 1.0:
            raise ValueError("q must be in (0, 1]")
        if cap < 1:
            raise ValueError("cap must be >= 1")
        self._key, self._q, self._cap = key, q, cap
        self._threshold = q
        self._kept: dict[str, tuple[float, Any]] = {}

    def observe(self, column: pa.Array | pa.ChunkedArray) -> None:
        for value in pc.unique(column.drop_null()).to_pylist():
            canonical = _canonical(value)
            if canonical in self._kept:
                continue
            rank = _rank(self._key, value)
            if rank < self._threshold:
                self._kept[canonical] = (rank, value)
        if len(self._kept) > 2 * self._cap:
            self._prune()

    def _prune(self) -> None:
        smallest = heapq.nsmallest(self._cap, self._kept.items(), key=lambda kv: kv[1][0])
        self._kept = dict(smallest)
        self._threshold = max(rank for rank, _ in self._kept.values())

    def keys(self) -> list[Any]:
        """The sampled real keys (server-side only; views get their pseudonyms)."""
        if len(self._kept) > self._cap:
            self._prune()
        return [value for _, value in sorted(self._kept.values(), key=lambda rv: rv[0])]


class JoinKeyView:
    """Wraps a view builder so its join-key columns hold pseudonyms, never real keys or nulls.

    ``real_rows`` is for the sample view (real rows): each row keeps its own key's pseudonym
    (a real null stays null). Otherwise the column is refilled with the pseudonyms of the
    sampled keys, each used at least once, spread over the rows in random order.
    """

    def __init__(self, inner: ViewBuilder, join_keys: Sequence[str], key: CollaborationKey, *,
                 q: float, cap: int, real_rows: bool = False, seed: int | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self._key = key
        self._real_rows = real_rows
        self._samples = {c: JoinKeySample(key, q=q, cap=cap) for c in join_keys}
        self._integer: dict[str, bool] = {}
        self._rng = np.random.default_rng(seed)

    @property
    def report(self) -> Any:
        """The wrapped builder's fidelity report, if it has one (the synthetic view)."""
        return getattr(self.inner, "report", None)

    def observe(self, batch: pa.RecordBatch) -> None:
        self.inner.observe(batch)
        for column, sample in self._samples.items():
            self._integer[column] = pa.types.is_integer(batch.schema.field(column).type)
            if not self._real_rows:
                sample.observe(batch.column(column))

    def build(self, schema: Schema) -> pd.DataFrame:
        frame = self.inner.build(schema)
        for column, sample in self._samples.items():
            integer = self._integer[column]
            if self._real_rows:
                frame[column] = self._pseudonymise_rows(frame[column], integer)
            else:
                frame[column] = self._spread(sample.keys(), len(frame), integer)
        return frame

    def _pseudonymise_rows(self, values: pd.Series, integer: bool) -> pd.Series:
        mapped = [None if pd.isna(v) else pseudonym(self._key, v, integer=integer)
                  for v in values.tolist()]
        return pd.Series(mapped, index=values.index, dtype="Int64" if integer else object)

    def _spread(self, keys: list[Any], rows: int, integer: bool) -> pd.Series:
        if keys:
            pool = [pseudonym(self._key, k, integer=integer) for k in keys]
        else:  # nothing sampled: decoys that match nothing, rather than nulls or real keys
            pool = [pseudonym(self._key, f"decoy/{secrets.token_hex(16)}", integer=integer)
                    for _ in range(min(rows, 16))]
        values = np.resize(np.asarray(pool, dtype=np.int64 if integer else object), rows)
        self._rng.shuffle(values)
        return pd.Series(values, dtype="int64" if integer else object)
