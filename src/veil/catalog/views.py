"""Stage-1 views: what a consumer programs against before any code touches the real data.

Builders are fed the same record batches as the encrypting writer (one pass over the upload)
and keep bounded state, so a 10^7-row upload never sits in memory.

Extension point: further views register with ``register_view_builder(name, factory)``;
``synthetic`` (DP synthetic data, ``veil.catalog.synthetic``) is registered lazily here.
Asking for an unregistered view raises :class:`ViewUnavailable` (fail closed).
"""

from __future__ import annotations

import math
import string
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from veil.catalog.errors import CatalogError, ViewUnavailable
from veil.catalog.joinkeys import JoinKeys, JoinKeyView
from veil.catalog.schema import Schema
from veil.crypto.pseudonym import CollaborationKey

if TYPE_CHECKING:
    from veil.catalog.policy import DatasetPolicy

__all__ = [
    "VIEW_BUILDERS",
    "MockViewBuilder",
    "SampleViewBuilder",
    "ViewBuilder",
    "make_view_builder",
    "register_view_builder",
    "view_builders_for",
]


@runtime_checkable
class ViewBuilder(Protocol):
    """Builds one stage-1 view from a single streamed pass over the data."""

    name: str

    def observe(self, batch: pa.RecordBatch) -> None: ...

    def build(self, schema: Schema) -> pd.DataFrame: ...


_TRACK_CATEGORIES = 10_000  # distinct values tracked per column before it counts as free text
_MAX_CATEGORIES = 1000  # categories published in a mock view (most frequent first)
_MAX_MOCK_STRLEN = 64


def _coarsen(lo: float, hi: float, *, integer: bool) -> tuple[float, float]:
    """Widen [lo, hi] outward to 2 significant digits so single extreme records aren't exact."""

    def step(x: float) -> float:
        if x == 0 or not math.isfinite(x):
            return 1.0
        return float(10 ** (math.floor(math.log10(abs(x))) - 1))

    s = max(step(lo), step(hi))
    if integer:
        s = max(1.0, s)
    # Near ±1.8e308 widening can overflow to ±inf; the largest finite float is the limit.
    top = sys.float_info.max
    return max(-top, math.floor(lo / s) * s), min(top, math.ceil(hi / s) * s)


class _MockColumn:
    __slots__ = ("arrow_type", "count", "counts", "hi", "lens", "lo", "nulls", "seen_bools")

    def __init__(self, arrow_type: pa.DataType) -> None:
        self.arrow_type = arrow_type
        self.count = 0
        self.nulls = 0
        self.lo: float | None = None
        self.hi: float | None = None
        self.counts: dict[str, int] | None = {}
        self.lens: tuple[int, int] | None = None
        self.seen_bools: set[bool] = set()

    def observe(self, arr: pa.Array) -> None:
        t = self.arrow_type
        self.count += len(arr)
        self.nulls += arr.null_count
        arr = arr.drop_null()
        if len(arr) == 0:
            return
        if pa.types.is_boolean(t):
            self.seen_bools.update(pc.unique(arr).to_pylist())
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            lens = pc.min_max(pc.utf8_length(arr))
            lo, hi = lens["min"].as_py(), lens["max"].as_py()
            if self.lens is not None:
                lo, hi = min(lo, self.lens[0]), max(hi, self.lens[1])
            self.lens = (lo, hi)
            if self.counts is not None:
                vc = pc.value_counts(arr)
                values, counts = vc.field("values").to_pylist(), vc.field("counts").to_pylist()
                for v, c in zip(values, counts, strict=True):
                    self.counts[v] = self.counts.get(v, 0) + c
                if len(self.counts) > _TRACK_CATEGORIES:
                    self.counts = None
        else:
            if pa.types.is_date(t):
                arr = arr.cast(pa.int32())
            elif pa.types.is_timestamp(t):
                arr = arr.cast(pa.int64())
            if pa.types.is_floating(t):
                arr = arr.filter(pc.is_finite(arr))  # ingest refuses ±inf; NaN has no order
                if len(arr) == 0:
                    return
            mm = pc.min_max(arr)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            if lo is None or (isinstance(lo, float) and math.isnan(lo)):
                return
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)

    def generate(
        self, kind: str, n: int, rng: np.random.Generator, min_count: int
    ) -> pa.Array:
        t = self.arrow_type
        null_rate = round(self.nulls / self.count, 2) if self.count else 1.0
        mask = rng.random(n) < null_rate
        values: Any
        if pa.types.is_boolean(t):
            seen = sorted(self.seen_bools)
            if not seen:
                return pa.nulls(n, type=t)
            values = np.asarray(seen)[rng.integers(0, len(seen), n)]
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            cats: list[str] = []
            if kind == "category" and self.counts is not None:
                frequent = sorted(
                    (c for c in self.counts.items() if c[1] >= min_count), key=lambda kv: -kv[1]
                )
                cats = sorted(v for v, _ in frequent[:_MAX_CATEGORIES])
            if cats:
                values = [cats[i] for i in rng.integers(0, len(cats), n)]
            elif kind == "category" or self.lens is None:
                return pa.nulls(n, type=t)  # every category too rare to publish, or no values
            else:
                short, long_ = self.lens[0], min(max(self.lens[1], 1), _MAX_MOCK_STRLEN)
                letters = np.array(list(string.ascii_lowercase))
                lengths = rng.integers(min(short, long_), long_ + 1, n)
                values = ["".join(letters[rng.integers(0, 26, k)]) for k in lengths]
        else:
            if self.lo is None or self.hi is None:
                return pa.nulls(n, type=t)
            if pa.types.is_floating(t):
                lo, hi = _coarsen(float(self.lo), float(self.hi), integer=False)
                # Drawn at half scale: hi - lo may exceed the largest float (e.g. ±1.7e308).
                values = rng.uniform(lo / 2, hi / 2, n) * 2
            elif pa.types.is_integer(t):
                lo, hi = _coarsen(float(self.lo), float(self.hi), integer=True)
                values = rng.integers(int(lo), int(hi) + 1, n, dtype=np.int64)
            else:  # date / timestamp as their integer encoding; ranges disclosed as-is
                ints = rng.integers(int(self.lo), int(self.hi) + 1, n, dtype=np.int64)
                inner = pa.int32() if pa.types.is_date(t) else pa.int64()
                return pa.array(ints, type=inner, mask=mask).cast(t)
        return pa.array(values, type=t, mask=mask)


class MockViewBuilder:
    """Schema-faithful synthetic rows: right types, ranges, category sets and null rates.

    Every value is drawn independently per column, so no real row is ever copied (a mock row
    that happens to match a real one is a coincidence of independent draws). What this view
    DOES disclose, and what a provider accepts by publishing it: each column's type, its null
    rate (to 2 decimals), its numeric range (widened outward to 2 significant digits), date
    ranges, string lengths, and the set of categories seen at least ``min_category_count``
    times (rarer categories are dropped; at most 1000 are kept). Category frequencies are not
    disclosed: categories are drawn uniformly.
    """

    name = "mock"

    def __init__(
        self, rows: int = 1000, seed: int | None = None, *, min_category_count: int = 5
    ) -> None:
        if rows < 1:
            raise ValueError("rows must be >= 1")
        if min_category_count < 1:
            raise ValueError("min_category_count must be >= 1")
        self.rows = rows
        self.min_category_count = min_category_count
        self._rng = np.random.default_rng(seed)
        self._cols: dict[str, _MockColumn] | None = None
        self._arrow_schema: pa.Schema | None = None

    def observe(self, batch: pa.RecordBatch) -> None:
        if self._cols is None:
            self._arrow_schema = batch.schema
            self._cols = {f.name: _MockColumn(f.type) for f in batch.schema}
        for f, arr in zip(batch.schema, batch.columns, strict=True):
            self._cols[f.name].observe(arr)

    def build(self, schema: Schema) -> pd.DataFrame:
        if self._cols is None or self._arrow_schema is None:
            raise CatalogError("mock view built before any data was observed")
        arrays = [
            self._cols[c.name].generate(c.type, self.rows, self._rng, self.min_category_count)
            for c in schema.columns
        ]
        return pa.Table.from_arrays(arrays, schema=self._arrow_schema).to_pandas()


class SampleViewBuilder:
    """A uniform random subset of real rows that the provider declared publishable.

    Bounded bottom-k sampling: each row gets a random key; rows with key < ``fraction`` are
    in the Bernoulli sample and the ``rows`` smallest keys are kept (fraction mode caps at
    ``max_rows`` so memory stays bounded). Only used when the policy opts in with
    ``views.sample.publishable = true``.
    """

    name = "sample"

    def __init__(
        self,
        *,
        rows: int | None = None,
        fraction: float | None = None,
        seed: int | None = None,
        max_rows: int = 100_000,
    ) -> None:
        if (rows is None) == (fraction is None):
            raise ValueError("give exactly one of rows or fraction")
        if rows is not None and not 1 <= rows <= max_rows:
            raise ValueError(f"rows must be in [1, {max_rows}]")
        if fraction is not None and not 0.0 < fraction <= 1.0:
            raise ValueError("fraction must be in (0, 1]")
        self._k = rows if rows is not None else max_rows
        self._p = fraction if fraction is not None else 1.0
        self._rng = np.random.default_rng(seed)
        self._seen = 0
        self._table: pa.Table | None = None
        self._keys = np.empty(0)
        self._pos = np.empty(0, dtype=np.int64)

    def observe(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        keys = self._rng.random(n)
        pos = np.arange(self._seen, self._seen + n, dtype=np.int64)
        self._seen += n
        mask = keys < self._p
        if len(self._keys) >= self._k:
            mask &= keys < self._keys.max()
        if not mask.any():
            return
        chosen = pa.Table.from_batches([batch.filter(pa.array(mask))])
        table = chosen if self._table is None else pa.concat_tables([self._table, chosen])
        keys_all = np.concatenate([self._keys, keys[mask]])
        pos_all = np.concatenate([self._pos, pos[mask]])
        if len(keys_all) > self._k:
            keep = np.argpartition(keys_all, self._k - 1)[: self._k]
            table = table.take(pa.array(keep))
            keys_all, pos_all = keys_all[keep], pos_all[keep]
        self._table = table.combine_chunks()
        self._keys, self._pos = keys_all, pos_all

    def build(self, schema: Schema) -> pd.DataFrame:
        if self._table is None:
            raise CatalogError("sample view is empty (no rows observed or none selected)")
        order = np.argsort(self._pos, kind="stable")
        return self._table.take(pa.array(order)).select(schema.names).to_pandas()


ViewFactory = Callable[..., ViewBuilder]

def _synthetic(**params: Any) -> ViewBuilder:
    from veil.catalog.synthetic import SyntheticViewBuilder  # lazy: pulls in OpenDP + jax

    return SyntheticViewBuilder(**params)


VIEW_BUILDERS: dict[str, ViewFactory] = {
    "mock": MockViewBuilder,
    "sample": SampleViewBuilder,
    "synthetic": _synthetic,
}


def register_view_builder(name: str, factory: ViewFactory, *, replace: bool = False) -> None:
    """Plug in a view (the privacy integration registers ``synthetic`` here)."""
    if name in VIEW_BUILDERS and not replace:
        raise CatalogError(f"view builder {name!r} is already registered")
    VIEW_BUILDERS[name] = factory


def make_view_builder(name: str, **params: Any) -> ViewBuilder:
    factory = VIEW_BUILDERS.get(name)
    if factory is None:
        raise ViewUnavailable(
            f"view {name!r} has no registered builder"
            + (" (DP synthetic data is not integrated yet)" if name == "synthetic" else "")
        )
    return factory(**params)


def view_builders_for(
    policy: DatasetPolicy | None, *, seed: int | None = None,
    collaboration: CollaborationKey | None = None, schema: Schema | None = None,
) -> list[ViewBuilder]:
    """The builders a policy calls for: mock always, sample only on opt-in, synthetic if set.

    With ``join_keys`` in the policy every view is wrapped so those columns hold view keys
    (``veil.catalog.joinkeys``), drawn once per build by one `JoinKeys` under
    ``collaboration``; without that key it refuses.
    """
    if policy is None:
        return [make_view_builder("mock", seed=seed)]
    join_keys = list(policy.join_keys)
    if join_keys and collaboration is None:
        raise CatalogError("join keys need the platform's collaboration key")
    views = policy.views
    key_rows = max(views.mock.rows, views.synthetic.rows if views.synthetic else 0)
    joins = JoinKeys(collaboration, policy, rows=key_rows, seed=seed) \
        if join_keys and collaboration is not None else None

    def joinable(builder: ViewBuilder, real_rows: bool = False) -> ViewBuilder:
        if joins is None:
            return builder
        if real_rows:
            # Real (published) rows never carry a joinable key: matching one against another
            # provider's view would disclose that this identifiable person is in that
            # provider's data. Their keys are pseudonyms under a throwaway key: neither the
            # real id nor linkable to anything.
            return JoinKeyView(builder, join_keys, throwaway=CollaborationKey.generate(),
                               seed=seed)
        return JoinKeyView(builder, join_keys, joins=joins, seed=seed)

    builders = [
        joinable(make_view_builder(
            "mock",
            rows=views.mock.rows,
            seed=seed,
            min_category_count=views.mock.min_category_count,
        ))
    ]
    sample = views.sample
    if sample is not None and sample.publishable:
        if sample.fraction is not None:
            builder = make_view_builder("sample", fraction=sample.fraction, seed=seed)
        else:
            builder = make_view_builder("sample", rows=sample.rows or 1000, seed=seed)
        builders.append(joinable(builder, real_rows=True))
    if views.synthetic is not None:
        from veil.catalog.viewconfig import synthetic_columns

        spec = views.synthetic
        names = [c.name for c in schema.columns] if schema is not None else None
        plan = synthetic_columns(policy, names) if names is not None else None
        # Join keys and excluded columns are not fitted (join keys get view keys): no epsilon
        # is spent on them.
        builders.append(joinable(
            make_view_builder(
                "synthetic", epsilon=spec.epsilon, delta=spec.delta, rows=spec.rows, seed=seed,
                method=spec.method,
                bounds=plan.bounds if plan else {
                    k: v for k, v in policy.all_bounds().items() if k not in join_keys},
                categories=plan.categories if plan else {},
                exclude=plan.exclude if plan else [*join_keys, *spec.exclude],
                unit_column=None if policy.privacy_unit is None
                else policy.privacy_unit.id_column,
                contributions=1 if policy.privacy_unit is None
                else policy.privacy_unit.max_contributions,
                target=spec.target,
            )))
    return builders
