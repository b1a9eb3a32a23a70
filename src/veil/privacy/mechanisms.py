"""DP mechanisms over pandas DataFrames, each built from an OpenDP measurement.

Privacy unit (the neighbouring relation) for every mechanism: two datasets are neighbours when
one is the other with ONE ROW added or removed (OpenDP ``symmetric_distance`` with d_in = 1).
A person who contributes several rows is protected only if the data is one row per person.

Every result is a :class:`DPResult` whose ``params`` are enough to rebuild the exact OpenDP
measurement, so the release gate can recompute the cost from OpenDP's own privacy map
(:func:`verify_cost`) instead of trusting what the sandbox declares. All mechanisms are pure
eps-DP (Laplace / discrete Laplace / exponential-mechanism quantile): delta is 0.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd
import polars as pl

from veil.privacy._opendp import (
    D_IN,
    calibrate,
    check_bounds,
    check_d_in,
    check_epsilon,
    check_scale,
)
from veil.privacy.errors import (
    CostMismatchError,
    InvalidParameterError,
    UnknownMechanismError,
)

__all__ = [
    "DPResult",
    "count",
    "count_cost",
    "grouped_count",
    "grouped_sum",
    "histogram",
    "mean",
    "noisy_count",
    "quantile",
    "sum",
    "verify_cost",
]

_OTHER = "__other__"
_REL_TOL = 1e-9
# Fixed-point grid for grouped sums: |value| maps into [-2^30, 2^30] so that up to 2^32-1 rows
# (the declared max_length margin) can never overflow int64.
_FIXED_POINT_MAG = float(2**30)
_MAX_LENGTH = 2**32 - 1


@dataclass(frozen=True)
class DPResult:
    """A DP release plus the cost it declares; ``params`` rebuild the OpenDP measurement."""

    value: Any
    mechanism: str
    epsilon: float
    delta: float
    params: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        col = self.params.get("column") or self.params.get("by")
        target = f" of {col}" if col else ""
        value = self.value
        if isinstance(value, float):
            value = round(value, 6)
        elif isinstance(value, list | dict) and len(value) > 6:
            value = f"<{len(value)} entries>"
        return (
            f"DPResult({self.mechanism}{target}: value={value!r}, "
            f"cost=(epsilon={self.epsilon:.6g}, delta={self.delta:.3g}))"
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form; what the sandbox writes and the release gate reads."""
        return {
            "mechanism": self.mechanism,
            "value": self.value,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "params": json.loads(json.dumps(self.params)),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DPResult:
        """Parse AND re-verify the declared cost against OpenDP's privacy map (fails closed)."""
        verify_cost(d)
        return cls(
            value=d["value"],
            mechanism=str(d["mechanism"]),
            epsilon=float(d["epsilon"]),
            delta=float(d["delta"]),
            params=dict(d["params"]),
        )


# --------------------------------------------------------------------------- helpers


def _num_vec_domain() -> Any:
    return dp.vector_domain(dp.atom_domain(T=float, nan=False))


def _space_float() -> tuple[Any, Any]:
    return _num_vec_domain(), dp.symmetric_distance()


def _column(df: pd.DataFrame, column: object) -> pd.Series:
    if not isinstance(df, pd.DataFrame):
        raise InvalidParameterError("data must be a pandas DataFrame")
    if not isinstance(column, str):
        raise InvalidParameterError("column must be a column name (str)")
    if column not in df.columns:
        raise InvalidParameterError(f"unknown column {column!r}")
    return df[column]


def _numeric_values(df: pd.DataFrame, column: str) -> list[float]:
    """Non-null values as floats; dropping nulls is a row-wise filter, so it is 1-stable."""
    s = _column(df, column)
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        raise InvalidParameterError(f"column {column!r} is not numeric")
    arr = s.dropna().to_numpy(dtype=float, na_value=np.nan)
    arr = arr[~np.isnan(arr)]
    return arr.tolist()


def _norm_scalar(v: Any) -> Any:
    """Python scalar for JSON and for stable labels (numpy scalars, NaN/NA -> None)."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, str | int | float | bool):
        return v
    return str(v)


def _label(values: Sequence[Any]) -> str:
    return json.dumps([_norm_scalar(v) for v in values], separators=(",", ":"))


def _by_list(by: object) -> list[str]:
    if isinstance(by, str):
        return [by]
    if isinstance(by, Sequence) and by and all(isinstance(b, str) for b in by):
        if len(set(by)) != len(by):
            raise InvalidParameterError("by has duplicate columns")
        return list(by)
    raise InvalidParameterError("by must be a column name or a non-empty list of names")


def _key_tuples(keys: object, n_by: int) -> list[list[Any]]:
    """Public group keys as lists of scalars; must be passed in, never read from the data."""
    if keys is None:
        raise InvalidParameterError(
            "keys are required: group keys must be public (passed in), not read from the data"
        )
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence) or len(keys) == 0:
        raise InvalidParameterError("keys must be a non-empty list")
    out: list[list[Any]] = []
    for k in keys:
        if n_by == 1 and not isinstance(k, list | tuple):
            k = [k]
        if not isinstance(k, list | tuple) or len(k) != n_by:
            raise InvalidParameterError(f"each key must have {n_by} value(s), one per by column")
        out.append([_norm_scalar(v) for v in k])
    labels = [_label(k) for k in out]
    if len(set(labels)) != len(labels):
        raise InvalidParameterError("keys contain duplicates")
    return out


def _row_labels(df: pd.DataFrame, by: list[str]) -> np.ndarray:
    """Each row's group label; labels are built once per distinct key, not once per row."""
    for b in by:
        _column(df, b)
    codes = np.zeros(len(df), dtype=np.int64)
    for b in by:
        col_codes, uniques = pd.factorize(df[b], use_na_sentinel=False)
        # Re-factorised after each column, codes stay below the row count: no overflow.
        codes = pd.factorize(codes * len(uniques) + col_codes)[0]
    distinct, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    rows = df[by].iloc[first].itertuples(index=False, name=None)
    labels = np.array([_label(list(row)) for row in rows], dtype=object)
    return labels[inverse] if len(distinct) else np.array([], dtype=object)


def _noisy_category_counts(labels: list[str], data: np.ndarray, scale: float) -> list[int]:
    """Exact counts per public label (+ the "other" bucket), then OpenDP's discrete Laplace.

    The same release as ``_m_categories(labels, scale)(data)`` — count_by_categories is
    d_in-stable into L1, the noise is OpenDP's sampler — without handing OpenDP a Python list
    of every row. The cost is still the map of the full measurement (``_m_categories``).
    """
    position = {label: i for i, label in enumerate(labels)}
    counts = [0] * (len(labels) + 1)
    for label, n in pd.Series(data, dtype=object).value_counts(sort=False).items():
        counts[position.get(str(label), len(labels))] += int(n)
    noise = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int), size=len(counts)),
                              dp.l1_distance(T=int), scale)
    return [int(c) for c in noise(counts)]


def _mag(b: tuple[float, float]) -> float:
    return max(abs(b[0]), abs(b[1])) * (1 + 1e-6)


def _spent(meas: Any, d_in: int = D_IN) -> float:
    return float(meas.map(d_in))


def _unit(params: dict[str, Any], d_in: int) -> dict[str, Any]:
    """Record a contribution bound other than one row, so the cost can be re-derived."""
    return params if d_in == D_IN else {**params, "d_in": d_in}


def _only(
    params: Mapping[str, Any], required: set[str], optional: frozenset[str] = frozenset()
) -> None:
    """Unknown or missing options are refused, never silently ignored."""
    unknown = set(params) - required - optional
    if unknown:
        raise InvalidParameterError(f"unknown option(s): {sorted(unknown)}")
    missing = required - set(params)
    if missing:
        raise InvalidParameterError(f"missing option(s): {sorted(missing)}")


# --------------------------------------------------------------------------- measurement builders
# Each builder takes the params dict stored in a DPResult and returns the OpenDP measurement.


def _m_count(scale: float) -> Any:
    space = (dp.vector_domain(dp.atom_domain(T=bool)), dp.symmetric_distance())
    return space >> dp.t.then_count() >> dp.m.then_laplace(scale)


def _m_sum(bounds: tuple[float, float], scale: float) -> Any:
    return (
        _space_float() >> dp.t.then_clamp(bounds) >> dp.t.then_sum() >> dp.m.then_laplace(scale)
    )


def _m_count_float(scale: float) -> Any:
    return _space_float() >> dp.t.then_count() >> dp.m.then_laplace(scale)


def _m_mean(bounds: tuple[float, float], count_scale: float, sum_scale: float) -> Any:
    return dp.c.make_composition([_m_count_float(count_scale), _m_sum(bounds, sum_scale)])


def _candidates(bounds: tuple[float, float], n: int) -> list[float]:
    return [float(x) for x in np.linspace(bounds[0], bounds[1], n)]


def _m_quantile(bounds: tuple[float, float], q: float, n_candidates: int, scale: float) -> Any:
    return dp.m.make_private_quantile(
        _num_vec_domain(),
        dp.symmetric_distance(),
        dp.max_divergence(),
        candidates=_candidates(bounds, n_candidates),
        alpha=q,
        scale=scale,
    )


def _m_categories(labels: list[str], scale: float) -> Any:
    space = (dp.vector_domain(dp.atom_domain(T=str)), dp.symmetric_distance())
    return (
        space
        >> dp.t.then_count_by_categories(categories=labels, null_category=True)
        >> dp.m.then_laplace(scale)
    )


def _m_bins(edges: list[float], scale: float) -> Any:
    return (
        _space_float()
        >> dp.t.then_find_bin(edges=edges)
        >> dp.t.then_count_by_categories(
            categories=list(range(1, len(edges))), null_category=True
        )
        >> dp.m.then_laplace(scale)
    )


def _fixed_point(bounds: tuple[float, float]) -> tuple[float, tuple[int, int]]:
    factor = _FIXED_POINT_MAG / max(abs(bounds[0]), abs(bounds[1]))
    return factor, (math.floor(bounds[0] * factor), math.ceil(bounds[1] * factor))


def _grouped_sum_plan(labels: list[str], int_bounds: tuple[int, int]) -> Any:
    empty = pl.LazyFrame(schema={"key": pl.String, "v": pl.Int64})
    keys = pl.LazyFrame({"key": labels}, schema={"key": pl.String})
    # .dp is OpenDP's polars namespace plugin, unknown to the polars stubs
    agg = empty.group_by("key").agg(pl.col("v").fill_null(0).dp.sum(int_bounds))  # type: ignore[attr-defined]
    return keys.join(agg, how="left", on=["key"], nulls_equal=True)


def _grouped_sum_domain() -> Any:
    domain = dp.lazyframe_domain(
        [
            dp.series_domain("key", dp.atom_domain(T=str)),
            dp.series_domain("v", dp.option_domain(dp.atom_domain(T="i64"))),
        ]
    )
    return dp.with_margin(domain, dp.polars.Margin(by=(), max_length=_MAX_LENGTH))


def _m_grouped_sum(labels: list[str], bounds: tuple[float, float], scale: float) -> Any:
    _, int_bounds = _fixed_point(bounds)
    return dp.m.make_private_lazyframe(
        _grouped_sum_domain(),
        dp.symmetric_distance(),
        dp.max_divergence(),
        _grouped_sum_plan(labels, int_bounds),
        global_scale=scale,
    )


# --------------------------------------------------------------------------- public mechanisms


def count(df: pd.DataFrame, *, epsilon: float, column: str | None = None,
          d_in: int = D_IN) -> DPResult:
    """DP row count, or count of non-null values of ``column`` (discrete Laplace, sensitivity 1)."""
    eps = check_epsilon(epsilon)
    d = check_d_in(d_in)
    if column is None:
        if not isinstance(df, pd.DataFrame):
            raise InvalidParameterError("data must be a pandas DataFrame")
        n = len(df)
    else:
        n = int(_column(df, column).notna().sum())
    released = noisy_count(n, epsilon=eps, d_in=d)
    return replace(released, params=_unit({"column": column, "scale": released.params["scale"]},
                                          d))


def noisy_count(n: int, *, epsilon: float, d_in: int = D_IN) -> DPResult:
    """DP release of an exact count ``n`` that one unit moves by at most ``d_in`` (OpenDP's
    discrete Laplace), for counts made outside a DataFrame, e.g. of distinct join keys."""
    eps = check_epsilon(epsilon)
    d = check_d_in(d_in)
    scale = calibrate(_m_count, eps, 1.0 / eps, d_in=d)
    # count is d_in-stable into an absolute distance: OpenDP's discrete Laplace on the exact n
    # is the same release as _m_count(scale)([True] * n), without a Python list of every row.
    noise = dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale)
    return DPResult(int(noise(int(n))), "count", count_cost(scale, d), 0.0,
                    _unit({"scale": scale}, d))


def count_cost(scale: float, d_in: int) -> float:
    """The epsilon of a discrete-Laplace count at ``scale`` when one unit moves it by ``d_in``."""
    return _spent(_m_count(scale), check_d_in(d_in))


def sum(
    df: pd.DataFrame, column: str, *, bounds: tuple[float, float], epsilon: float,
    d_in: int = D_IN,
) -> DPResult:
    """DP sum of ``column`` clamped to ``bounds`` (nulls dropped); sensitivity max(|lo|, |hi|)."""
    eps = check_epsilon(epsilon)
    d = check_d_in(d_in)
    b = check_bounds(bounds)
    values = _numeric_values(df, column)
    scale = calibrate(lambda s: _m_sum(b, s), eps, _mag(b) / eps, d_in=d)
    meas = _m_sum(b, scale)
    return DPResult(
        float(meas(values)), "sum", _spent(meas, d), 0.0,
        _unit({"column": column, "bounds": list(b), "scale": scale}, d),
    )


def mean(
    df: pd.DataFrame,
    column: str,
    *,
    bounds: tuple[float, float],
    epsilon: float,
    count_share: float = 0.5,
    d_in: int = D_IN,
) -> DPResult:
    """DP mean with unknown n: a DP count and a DP clamped sum composed, then divided.

    ``count_share`` of epsilon goes to the count. The ratio is post-processing and is clamped
    to ``bounds`` (a noisy count <= 0 gives the midpoint).
    """
    eps = check_epsilon(epsilon)
    d = check_d_in(d_in)
    b = check_bounds(bounds)
    if isinstance(count_share, bool) or not isinstance(count_share, int | float) or not (
        0.0 < float(count_share) < 1.0
    ):
        raise InvalidParameterError("count_share must be in (0, 1)")
    values = _numeric_values(df, column)
    c_eps = eps * float(count_share)
    s_eps = eps - c_eps
    c_scale = calibrate(_m_count_float, c_eps, 1.0 / c_eps, d_in=d)
    s_scale = calibrate(lambda s: _m_sum(b, s), s_eps, _mag(b) / s_eps, d_in=d)
    meas = _m_mean(b, c_scale, s_scale)
    noisy_count, noisy_sum = meas(values)
    value = (b[0] + b[1]) / 2 if noisy_count <= 0 else min(max(noisy_sum / noisy_count, b[0]), b[1])
    return DPResult(
        float(value), "mean", _spent(meas, d), 0.0,
        _unit({"column": column, "bounds": list(b), "count_scale": c_scale,
               "sum_scale": s_scale}, d),
    )


def quantile(
    df: pd.DataFrame,
    column: str,
    q: float,
    *,
    bounds: tuple[float, float],
    epsilon: float,
    n_candidates: int = 101,
    d_in: int = D_IN,
) -> DPResult:
    """DP q-quantile chosen among ``n_candidates`` evenly spaced points of ``bounds``
    (OpenDP's exponential-mechanism quantile)."""
    eps = check_epsilon(epsilon)
    d = check_d_in(d_in)
    b = check_bounds(bounds)
    qf = _check_q(q)
    n_c = _check_n_candidates(n_candidates)
    values = _numeric_values(df, column)
    scale = calibrate(lambda s: _m_quantile(b, qf, n_c, s), eps, d_in=d)
    meas = _m_quantile(b, qf, n_c, scale)
    return DPResult(
        float(meas(values)), "quantile", _spent(meas, d), 0.0,
        _unit({"column": column, "q": qf, "bounds": list(b), "n_candidates": n_c,
               "scale": scale}, d),
    )


def histogram(
    df: pd.DataFrame,
    column: str,
    *,
    epsilon: float,
    categories: Sequence[Any] | None = None,
    bins: Sequence[float] | None = None,
    d_in: int = D_IN,
) -> DPResult:
    """DP counts per public category, or per bin [e_i, e_i+1) of public ``bins`` edges.

    Rows outside the categories/bins are counted together under ``"__other__"`` (nulls too for
    categories; for bins, nulls are dropped first).
    """
    eps = check_epsilon(epsilon)
    d = check_d_in(d_in)
    if (categories is None) == (bins is None):
        raise InvalidParameterError("pass exactly one of categories or bins")
    if categories is not None:
        labels = _category_labels(categories)
        data = _row_labels(df, [column])
        scale = calibrate(lambda s: _m_categories(labels, s), eps, 1.0 / eps, d_in=d)
        meas = _m_categories(labels, scale)
        counts = _noisy_category_counts(labels, data, scale)
        names = [str(json.loads(lab)[0]) for lab in labels]
        params: dict[str, Any] = {
            "column": column, "categories": [json.loads(x)[0] for x in labels]
        }
    else:
        edges = _check_edges(bins)
        data_f = _numeric_values(df, column)
        scale = calibrate(lambda s: _m_bins(edges, s), eps, 1.0 / eps, d_in=d)
        meas = _m_bins(edges, scale)
        counts = meas(data_f)
        names = [f"[{edges[i]:g}, {edges[i + 1]:g})" for i in range(len(edges) - 1)]
        params = {"column": column, "bins": edges}
    params["scale"] = scale
    value = {name: int(c) for name, c in zip(names, counts[:-1], strict=True)}
    value[_OTHER] = int(counts[-1])
    return DPResult(value, "histogram", _spent(meas, d), 0.0, _unit(params, d))


def grouped_count(
    df: pd.DataFrame, by: str | Sequence[str], *, epsilon: float, keys: Sequence[Any],
    d_in: int = D_IN,
) -> DPResult:
    """DP count per group for a PUBLIC list of group keys.

    Keys must come from the caller (schema, codebook, provider policy): reading the distinct
    keys from the data would reveal rare groups without any noise. Rows outside the keys are
    not released.
    """
    eps = check_epsilon(epsilon)
    d = check_d_in(d_in)
    by_l = _by_list(by)
    key_t = _key_tuples(keys, len(by_l))
    labels = [_label(k) for k in key_t]
    data = _row_labels(df, by_l)
    scale = calibrate(lambda s: _m_categories(labels, s), eps, 1.0 / eps, d_in=d)
    meas = _m_categories(labels, scale)
    counts = _noisy_category_counts(labels, data, scale)
    value = [
        {**dict(zip(by_l, k, strict=True)), "count": int(c)}
        for k, c in zip(key_t, counts[:-1], strict=True)
    ]
    return DPResult(value, "grouped_count", _spent(meas, d), 0.0,
                    _unit({"by": by_l, "keys": key_t, "scale": scale}, d))


def grouped_sum(
    df: pd.DataFrame,
    by: str | Sequence[str],
    column: str,
    *,
    bounds: tuple[float, float],
    epsilon: float,
    keys: Sequence[Any],
    d_in: int = D_IN,
) -> DPResult:
    """DP sum of ``column`` per group for a PUBLIC list of group keys (see grouped_count).

    Values are clamped to ``bounds`` and put on a fixed-point grid (2^30 steps per
    max(|lo|, |hi|)) so OpenDP can use an exact integer sum; OpenDP's margin assumes at most
    2^32 - 1 rows. Nulls count as 0.
    """
    eps = check_epsilon(epsilon)
    d = check_d_in(d_in)
    b = check_bounds(bounds)
    by_l = _by_list(by)
    key_t = _key_tuples(keys, len(by_l))
    labels = [_label(k) for k in key_t]
    s = _column(df, column)
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        raise InvalidParameterError(f"column {column!r} is not numeric")
    factor, _ = _fixed_point(b)
    vals = s.to_numpy(dtype=float, na_value=np.nan)
    fixed = np.where(np.isnan(vals), 0.0, np.rint(np.clip(vals, b[0], b[1]) * factor))
    frame = pl.LazyFrame(
        {"key": _row_labels(df, by_l).tolist(), "v": fixed.astype(np.int64)},
        schema={"key": pl.String, "v": pl.Int64},
    )
    scale = calibrate(lambda sc: _m_grouped_sum(labels, b, sc), eps, 1.0 / eps, d_in=d)
    meas = _m_grouped_sum(labels, b, scale)
    out = meas(frame).collect()
    sums = dict(zip(out["key"].to_list(), out["v"].to_list(), strict=True))
    value = [
        {**dict(zip(by_l, k, strict=True)), "sum": float(sums.get(lab) or 0) / factor}
        for k, lab in zip(key_t, labels, strict=True)
    ]
    return DPResult(value, "grouped_sum", _spent(meas, d), 0.0,
                    _unit({"by": by_l, "column": column, "bounds": list(b), "keys": key_t,
                           "scale": scale}, d))


# --------------------------------------------------------------------------- validation helpers


def _check_q(q: object) -> float:
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= float(q) <= 1.0:
        raise InvalidParameterError("q must be a number in [0, 1]")
    return float(q)


def _check_n_candidates(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 100_000:
        raise InvalidParameterError("n_candidates must be an integer in [2, 100000]")
    return n


def _category_labels(categories: object) -> list[str]:
    if isinstance(categories, str | bytes) or not isinstance(categories, Sequence):
        raise InvalidParameterError("categories must be a non-empty list")
    if not categories:
        raise InvalidParameterError("categories must be a non-empty list")
    labels = [_label([c]) for c in categories]
    if len(set(labels)) != len(labels):
        raise InvalidParameterError("categories contain duplicates")
    if _label([_OTHER]) in labels:
        raise InvalidParameterError(f"{_OTHER!r} is reserved")
    return labels


def _check_edges(bins: object) -> list[float]:
    if isinstance(bins, str | bytes) or not isinstance(bins, Sequence) or len(bins) < 2:
        raise InvalidParameterError("bins must be a list of at least 2 edges")
    edges: list[float] = []
    for e in bins:
        if isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(float(e)):
            raise InvalidParameterError("bin edges must be finite numbers")
        edges.append(float(e))
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise InvalidParameterError("bin edges must be strictly increasing")
    return edges


# --------------------------------------------------------------------------- cost verification


def _rebuild_count(p: Mapping[str, Any]) -> Any:
    _only(p, {"column", "scale"})
    if p["column"] is not None and not isinstance(p["column"], str):
        raise InvalidParameterError("column must be a string or null")
    return _m_count(check_scale(p["scale"]))


def _rebuild_sum(p: Mapping[str, Any]) -> Any:
    _only(p, {"column", "bounds", "scale"})
    return _m_sum(check_bounds(p["bounds"]), check_scale(p["scale"]))


def _rebuild_mean(p: Mapping[str, Any]) -> Any:
    _only(p, {"column", "bounds", "count_scale", "sum_scale"})
    return _m_mean(
        check_bounds(p["bounds"]), check_scale(p["count_scale"]), check_scale(p["sum_scale"])
    )


def _rebuild_quantile(p: Mapping[str, Any]) -> Any:
    _only(p, {"column", "q", "bounds", "n_candidates", "scale"})
    return _m_quantile(
        check_bounds(p["bounds"]), _check_q(p["q"]), _check_n_candidates(p["n_candidates"]),
        check_scale(p["scale"]),
    )


def _rebuild_histogram(p: Mapping[str, Any]) -> Any:
    if "categories" in p:
        _only(p, {"column", "categories", "scale"})
        return _m_categories(_category_labels(p["categories"]), check_scale(p["scale"]))
    _only(p, {"column", "bins", "scale"})
    return _m_bins(_check_edges(p["bins"]), check_scale(p["scale"]))


def _rebuild_grouped_count(p: Mapping[str, Any]) -> Any:
    _only(p, {"by", "keys", "scale"})
    by = _by_list(p["by"])
    labels = [_label(k) for k in _key_tuples(p["keys"], len(by))]
    return _m_categories(labels, check_scale(p["scale"]))


def _rebuild_grouped_sum(p: Mapping[str, Any]) -> Any:
    _only(p, {"by", "column", "bounds", "keys", "scale"})
    by = _by_list(p["by"])
    labels = [_label(k) for k in _key_tuples(p["keys"], len(by))]
    return _m_grouped_sum(labels, check_bounds(p["bounds"]), check_scale(p["scale"]))


_REBUILD: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "count": _rebuild_count,
    "sum": _rebuild_sum,
    "mean": _rebuild_mean,
    "quantile": _rebuild_quantile,
    "histogram": _rebuild_histogram,
    "grouped_count": _rebuild_grouped_count,
    "grouped_sum": _rebuild_grouped_sum,
}

_RESULT_FIELDS = {"mechanism", "value", "epsilon", "delta", "params"}


def verify_cost(d: Mapping[str, Any] | DPResult) -> tuple[float, float]:
    """Rebuild the OpenDP measurement from mechanism+params; return its (eps, delta) at the
    recorded contribution bound (``params["d_in"]``, default one row), or raise
    CostMismatchError if the declared cost differs from it."""
    if isinstance(d, DPResult):
        d = d.to_json()
    if not isinstance(d, Mapping):
        raise InvalidParameterError("a DP result must be a JSON object")
    unknown = set(d) - _RESULT_FIELDS
    missing = _RESULT_FIELDS - set(d)
    if unknown or missing:
        raise InvalidParameterError(
            f"DP result fields: unknown {sorted(unknown)}, missing {sorted(missing)}"
        )
    mech = d["mechanism"]
    if mech not in _REBUILD:
        raise UnknownMechanismError(f"unknown mechanism {mech!r}; known: {sorted(_REBUILD)}")
    params = d["params"]
    if not isinstance(params, Mapping):
        raise InvalidParameterError("params must be an object")
    d_in = check_d_in(params.get("d_in", D_IN))
    params = {k: v for k, v in params.items() if k != "d_in"}
    try:
        meas = _REBUILD[mech](params)
    except dp.OpenDPException as exc:
        raise InvalidParameterError(f"{mech}: params do not form a valid measurement") from exc
    eps_true = _spent(meas, d_in)
    delta_true = 0.0
    eps_decl, delta_decl = d["epsilon"], d["delta"]
    for name, v in (("epsilon", eps_decl), ("delta", delta_decl)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
            raise CostMismatchError(f"declared {name} is not a finite number")
    if abs(float(eps_decl) - eps_true) > _REL_TOL * max(1.0, eps_true):
        raise CostMismatchError(
            f"{mech}: declared epsilon {float(eps_decl)!r} but the mechanism spends {eps_true!r}"
        )
    if float(delta_decl) != delta_true:
        raise CostMismatchError(
            f"{mech}: declared delta {float(delta_decl)!r} but the mechanism spends {delta_true!r}"
        )
    _check_value_shape(mech, params, d["value"])
    return eps_true, delta_true


def _check_value_shape(mech: str, params: Mapping[str, Any], value: Any) -> None:
    """A release must look like what its mechanism outputs; anything else is refused."""
    if mech in {"count"}:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif mech in {"sum", "mean", "quantile"}:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif mech == "histogram":
        n = len(params["categories"]) if "categories" in params else len(params["bins"]) - 1
        ok = isinstance(value, dict) and len(value) == n + 1 and _OTHER in value and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value.values()
        )
    else:
        field_name = "count" if mech == "grouped_count" else "sum"
        expected = {*params["by"], field_name}
        ok = (
            isinstance(value, list)
            and len(value) == len(params["keys"])
            and all(isinstance(r, dict) and set(r) == expected for r in value)
        )
    if not ok:
        raise InvalidParameterError(f"{mech}: released value does not match the mechanism's output")
