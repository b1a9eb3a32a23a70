"""Join keys in stage-1 views: synthetic keys that match as often as the real keys, by DP.

Without this a researcher cannot develop a cross-provider join on the views: a mock id is a
random number per dataset and a synthetic id carries nothing, so the join gives no rows (or a
null-by-null blow-up). A policy names its join keys (``join_keys = ["patient_id"]``); datasets
of the platform that name the same column share its key space.

How a build fills a join-key column of its mock and synthetic views (`draw_pool`):

1. While the data streams past, `KeyIndex` keeps the distinct real keys as 64-bit tags
   (HMAC-SHA256 under the platform's collaboration key, which never leaves the server),
   sealed beside the views so later datasets can be compared with it.
2. OpenDP's discrete Laplace releases the number of distinct keys, ñ, and for each earlier
   ready dataset with that join key and a consumer in common, the size of the overlap, c̃.
   One privacy unit moves a count by at most ``d_in`` (1 when the key is the unit's id, else
   ``max_contributions``: only each unit's first that many rows are indexed). Each count costs
   ``join_epsilon``: ñ and every c̃ are charged to this dataset, each c̃ also to the other one.
3. The view gets as many rows per key as the data has (its row count is public already;
   ``join_sample_rate``, default 1, scales that; never more keys than rows): for each earlier
   dataset, as many keys drawn at random from that dataset's view keys as the overlap is of
   each side (c̃/ñ), the rest fresh random keys. No view key is, or is derived from, a real key.

So a join of two views matches about as often as the join of the data, and what the keys
disclose is a function of DP releases only. Three-way overlaps are not modelled: a key drawn
from one dataset may happen to be one that dataset drew from a third. The sample view's real
rows carry pseudonyms under a throwaway key of their own: never the real id, and never
joinable (a match would say that this published person is in the other provider's data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from veil.catalog.policy import DatasetPolicy
from veil.catalog.schema import Schema
from veil.crypto.pseudonym import CollaborationKey
from veil.privacy.mechanisms import count_cost, noisy_count

if TYPE_CHECKING:
    from veil.catalog.views import ViewBuilder

__all__ = [
    "JoinKeyView",
    "JoinKeys",
    "KeyIndex",
    "KeyPool",
    "Partner",
    "draw_pool",
    "join_key_problems",
    "pseudonym",
]

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


class KeyIndex:
    """One join-key column's distinct real keys as 64-bit keyed tags (server side, sealed).

    Tags, not keys: the index of two datasets can be intersected without either's keys. With
    a privacy unit other than the key column, only the keys of each unit's first
    ``max_contributions`` rows count, so one unit moves the index by at most that many keys
    (the ``d_in`` the DP counts are calibrated for). Memory: 8 bytes a distinct key, or 16 a
    row when units are tracked.
    """

    def __init__(self, key: CollaborationKey, column: str, *, unit_column: str | None = None,
                 max_contributions: int = 1) -> None:
        self._key, self.column = key, column
        self._unit = unit_column if unit_column != column else None
        self._k = max_contributions
        self._tags: list[np.ndarray] = []
        self._units: list[np.ndarray] = []
        self._done: np.ndarray | None = None

    def _tag_values(self, values: list[Any]) -> np.ndarray:
        return np.fromiter((int.from_bytes(self._key.tag("index", _canonical(v))[:8], "big")
                            for v in values), dtype=np.uint64, count=len(values))

    def observe(self, batch: pa.RecordBatch) -> None:
        if self._done is not None:
            raise RuntimeError("the key index was already read out")
        column = batch.column(self.column)
        if self._unit is None:
            self._tags.append(self._tag_values(pc.unique(column.drop_null()).to_pylist()))
            return
        unit = batch.column(self._unit)
        keep = pc.and_(pc.is_valid(column), pc.is_valid(unit))
        encoded = pc.dictionary_encode(column.filter(keep))
        tags = self._tag_values(encoded.dictionary.to_pylist())
        self._tags.append(tags[encoded.indices.to_numpy(zero_copy_only=False)])
        self._units.append(pd.util.hash_array(unit.filter(keep).to_numpy(zero_copy_only=False)))

    def tags(self) -> np.ndarray:
        """The sorted distinct tags (computed once, when the data has been read)."""
        if self._done is None:
            self._done = self._distinct()
            self._tags, self._units = [], []
        return self._done

    def _distinct(self) -> np.ndarray:
        if not self._tags:
            return np.empty(0, dtype=np.uint64)
        tags = np.concatenate(self._tags)
        if self._unit is not None:  # each unit's first max_contributions rows only
            units = np.concatenate(self._units)
            order = np.argsort(units, kind="stable")
            sorted_units = units[order]
            starts = np.r_[0, np.flatnonzero(sorted_units[1:] != sorted_units[:-1]) + 1]
            rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
            tags = tags[order[rank < self._k]]
        return np.unique(tags)


@dataclass(frozen=True)
class Partner:
    """Another dataset's join-key column as a build sees it (server side only)."""

    dataset_id: str
    name: str  # "insurer/claims", for the summary and the audit
    tags: np.ndarray  # its key index
    distinct: float  # its released (DP) count of distinct keys
    keys: list[Any]  # the keys its views carry
    d_in: int  # how many of its distinct keys one of its units can change


@dataclass(frozen=True)
class KeyPool:
    """One join-key column's view keys, and the DP releases they were drawn from."""

    column: str
    integer: bool
    keys: list[Any]
    distinct: float  # the DP count of this dataset's distinct keys
    matched: dict[str, int]  # partner name -> keys drawn from its views' keys
    epsilon: float  # what this dataset spent: its distinct count and every overlap
    partner_epsilon: dict[str, float]  # partner dataset id -> what its overlap cost it

    def stored(self) -> dict[str, Any]:
        """What a later dataset needs to match these keys (sealed beside the views)."""
        return {"column": self.column, "integer": self.integer, "distinct": self.distinct,
                "keys": self.keys}

    def summary(self) -> dict[str, Any]:
        """Public: derived from DP releases only."""
        return {"keys": len(self.keys), "matched": dict(self.matched),
                "epsilon": round(self.epsilon, 6)}


def draw_pool(tags: np.ndarray, *, column: str, integer: bool, d_in: int, per_key: float,
              rows: int, epsilon: float, partners: Sequence[Partner] = (),
              rng: np.random.Generator) -> KeyPool:
    """The view keys of one column: ``per_key`` times the distinct real keys (at most
    ``rows``), of which as many are drawn from each partner's view keys as the real keys
    overlap, by DP counts; the rest are fresh random keys.

    Pure given ``rng``: the keys depend on the data only through OpenDP's discrete-Laplace
    releases of the distinct count and of each overlap (one unit moves either by at most its
    ``d_in``), so everything a view's keys disclose is covered by those ``epsilon`` s.
    """
    own = noisy_count(len(tags), epsilon=epsilon, d_in=d_in)
    distinct = float(max(own.value, 1))
    size = int(np.clip(round(per_key * distinct), 1, rows))
    spent, matched, partner_epsilon = own.epsilon, {}, {}
    keys: list[Any] = []
    seen: set[Any] = set()
    for partner in partners:
        d = max(d_in, partner.d_in)
        overlap = noisy_count(int(np.intersect1d(tags, partner.tags, assume_unique=True).size),
                              epsilon=epsilon, d_in=d)
        scale = overlap.params["scale"]
        spent += count_cost(scale, d_in)
        partner_epsilon[partner.dataset_id] = count_cost(scale, partner.d_in)
        both = max(overlap.value, 0)
        # As many shared keys as the overlap is of each side's distinct keys, in each view.
        want = min(size * both / distinct, len(partner.keys) * both / max(partner.distinct, 1.0))
        candidates = [k for k in partner.keys if k not in seen]
        take = int(min(round(want), size - len(keys), len(candidates)))
        for i in rng.choice(len(candidates), size=take, replace=False):
            keys.append(candidates[int(i)])
            seen.add(candidates[int(i)])
        matched[partner.name] = take
    while len(keys) < size:
        fresh = int(rng.integers(0, 2**_INT_BITS)) if integer else rng.bytes(_STR_HEX // 2).hex()
        if fresh not in seen:
            keys.append(fresh)
            seen.add(fresh)
    rng.shuffle(keys)
    return KeyPool(column, integer, keys, distinct, matched, spent, partner_epsilon)


class JoinKeys:
    """A build's join-key columns: their key index while the data streams past, then (after
    `resolve`) their view keys, shared by every view of the build."""

    def __init__(self, key: CollaborationKey, policy: DatasetPolicy, *, rows: int,
                 seed: int | None = None) -> None:
        unit = policy.privacy_unit
        self.columns = list(policy.join_keys)
        self.rows = rows  # the largest view's: the keys are drawn for it
        self.data_rows = 0
        self._policy = policy
        self._index = {c: KeyIndex(key, c, unit_column=unit.id_column if unit else None,
                                   max_contributions=unit.max_contributions if unit else 1)
                       for c in self.columns}
        self._integer: dict[str, bool] = {}
        self._last: pa.RecordBatch | None = None
        self._rng = np.random.default_rng(seed)
        self.pools: dict[str, KeyPool] | None = None

    def observe(self, batch: pa.RecordBatch) -> None:
        if batch is self._last:  # every view of the build passes the same batch on
            return
        self._last = batch
        self.data_rows += batch.num_rows
        for column, index in self._index.items():
            self._integer[column] = pa.types.is_integer(batch.schema.field(column).type)
            index.observe(batch)

    def tags(self, column: str) -> np.ndarray:
        return self._index[column].tags()

    def integer(self, column: str) -> bool:
        return self._integer.get(column, False)

    def resolve(self, partners: Mapping[str, Sequence[Partner]] | None = None) -> None:
        """Release the DP counts and draw every column's view keys (once per build)."""
        if self.pools is not None:
            return
        partners = partners or {}
        policy = self._policy
        # As many rows per key in the view as in the data (the row count is public), times
        # the policy's join_sample_rate: joins then multiply rows as on the real data.
        per_key = policy.effective_join_sample_rate * self.rows / max(self.data_rows, 1)
        self.pools = {c: draw_pool(self.tags(c), column=c, integer=self.integer(c),
                                   d_in=policy.join_key_d_in(c),
                                   per_key=per_key, rows=self.rows,
                                   epsilon=policy.effective_join_epsilon,
                                   partners=partners.get(c, ()), rng=self._rng)
                      for c in self.columns}

    @property
    def epsilon(self) -> float:
        """What this build's DP counts spent on this dataset."""
        return sum(p.epsilon for p in (self.pools or {}).values())

    def partner_epsilon(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pool in (self.pools or {}).values():
            for dataset_id, eps in pool.partner_epsilon.items():
                out[dataset_id] = out.get(dataset_id, 0.0) + eps
        return out

    def summary(self) -> dict[str, Any]:
        return {c: p.summary() for c, p in (self.pools or {}).items()}

class JoinKeyView:
    """Wraps a view builder so its join-key columns hold view keys, never real keys or nulls.

    ``real_rows`` is for the sample view (real rows): each row's key becomes a pseudonym under
    a throwaway key (a real null stays null), joinable to nothing. Otherwise the column is
    refilled with the build's view keys (``JoinKeys``), each used at least once when the view
    has the rows for it, spread over the rows in random order.
    """

    def __init__(self, inner: ViewBuilder, join_keys: Sequence[str], *,
                 joins: JoinKeys | None = None, throwaway: CollaborationKey | None = None,
                 seed: int | None = None) -> None:
        if (joins is None) == (throwaway is None):
            raise ValueError("a join-key view needs the build's keys or a throwaway key")
        self.inner = inner
        self.name = inner.name
        self.joins = joins
        self._columns = list(join_keys)
        self._throwaway = throwaway
        self._integer: dict[str, bool] = {}
        self._rng = np.random.default_rng(seed)

    @property
    def report(self) -> Any:
        """The wrapped builder's fidelity report, if it has one (the synthetic view)."""
        return getattr(self.inner, "report", None)

    def observe(self, batch: pa.RecordBatch) -> None:
        self.inner.observe(batch)
        if self.joins is not None:
            self.joins.observe(batch)
        for column in self._columns:
            self._integer[column] = pa.types.is_integer(batch.schema.field(column).type)

    def build(self, schema: Schema) -> pd.DataFrame:
        frame = self.inner.build(schema)
        if self.joins is not None:
            self.joins.resolve()  # no-op if the catalog resolved them with partners
        for column in self._columns:
            integer = self._integer.get(column, False)
            if self._throwaway is not None:
                frame[column] = self._pseudonymise_rows(frame[column], integer)
            else:
                assert self.joins is not None and self.joins.pools is not None
                frame[column] = self._spread(self.joins.pools[column].keys, len(frame),
                                             self.joins.rows, integer)
        return frame

    def _pseudonymise_rows(self, values: pd.Series, integer: bool) -> pd.Series:
        assert self._throwaway is not None
        mapped = [None if pd.isna(v) else pseudonym(self._throwaway, v, integer=integer)
                  for v in values.tolist()]
        return pd.Series(mapped, index=values.index, dtype="Int64" if integer else object)

    def _spread(self, keys: list[Any], rows: int, pool_rows: int, integer: bool) -> pd.Series:
        pool = np.asarray(keys, dtype=np.int64 if integer else object)
        wanted = max(1, min(rows, round(len(pool) * rows / max(pool_rows, 1))))
        if len(pool) > wanted:  # a smaller view: a uniform subset keeps rows per key and rates
            pool = self._rng.choice(pool, size=wanted, replace=False)
        values = np.resize(pool, rows)
        self._rng.shuffle(values)
        return pd.Series(values, dtype="int64" if integer else object)
