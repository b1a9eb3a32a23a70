"""DP synthetic stage-1 views: OpenDP's contingency table (MST or AIM, via Private-PGM).

Privacy unit: one row added or removed. Everything that looks at the data is inside an OpenDP
measurement whose privacy map is the recorded spend:

- numeric bounds the provider does not give are chosen by a thresholded DP histogram over a
  fixed, data-independent log grid (10% of epsilon, split over those columns);
- categories the provider does not give are discovered by OpenDP's thresholded key release
  inside the contingency table (this is what needs delta > 0); rare values fold into null;
- null rates are modelled because null is a category of every column.

Sampling from the fitted model, un-binning, the shuffle and the stray-null pass are
post-processing. Their randomness (numpy, optionally seeded) is not DP noise. The DP noise
comes from OpenDP's samplers and cannot be seeded, so ``seed`` only fixes the post-processing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import numpy as np
import opendp.prelude as dp
import pandas as pd
import polars as pl

from veil.privacy._mbi import SafeAIM, SafeMST
from veil.privacy._opendp import D_IN, calibrate, check_bounds, check_delta, check_epsilon
from veil.privacy.errors import InvalidParameterError, SyntheticDataError

__all__ = ["FidelityReport", "SyntheticView", "bounds_min_epsilon", "fit_synthetic"]

Method = Literal["auto", "copula", "mst", "aim"]
_BOUNDS_SHARE = 0.1
_BOUNDS_FAILURE = 0.01  # chance that a noise-only bin clears the threshold, per column


def _log_grid() -> list[float]:
    """Public candidate grid for DP bounds: 0 and +-10^k, 4 steps per decade, 1e-3 .. 1e12."""
    pos = [float(10 ** (k / 4)) for k in range(-12, 49)]
    return sorted({*(-p for p in pos), 0.0, *pos})


@dataclass(frozen=True)
class FidelityReport:
    """Total-variation error of the view against the real data, per column and per pair.

    Computed from the REAL data: it stays with the provider. Consumers get
    :meth:`public_json`, which holds only DP-derived figures.
    """

    columns: dict[str, float]
    pairs: dict[str, float]
    epsilon: float
    delta: float
    method: str
    rows: int
    spend: dict[str, float] = field(default_factory=dict)
    # The column pairs the DP model measured and keeps (its cliques): a DP output.
    modelled_pairs: list[str] = field(default_factory=list)
    # Provider-only figures from ``veil.privacy.fidelity`` (KS, correlation changes, lost
    # relationships, TSTR) and the warnings they raise; added by the caller.
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "fidelity",
            "provider_only": True,
            "metric": "total_variation",
            "columns": dict(self.columns),
            "pairs": dict(self.pairs),
            **self.extra,
            "warnings": list(self.warnings),
            **self.public_json(),
        }

    def public_json(self) -> dict[str, Any]:
        """What a consumer may see. DP-safe: the cost, how it was split, and which column
        pairs the model kept are all outputs of the DP fit (post-processing); nothing here
        is computed from the real data."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "method": self.method,
            "rows": self.rows,
            "spend": dict(self.spend),
            "modelled_pairs": list(self.modelled_pairs),
        }

    def plot_png(self, path: str | Path) -> Path:
        """Bar chart of per-column TV and a heatmap of 2-way TV, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = list(self.columns)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
        ax1.bar(range(len(cols)), [self.columns[c] for c in cols], color="#4a7ab5")
        ax1.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax1.set_ylabel("total variation distance")
        ax1.set_title("1-way marginals")
        grid = np.full((len(cols), len(cols)), np.nan)
        for key, v in self.pairs.items():
            a, b = key.split("|", 1)
            i, j = cols.index(a), cols.index(b)
            grid[i, j] = grid[j, i] = v
        im = ax2.imshow(grid, cmap="viridis", vmin=0, vmax=max(0.05, np.nanmax(grid, initial=0)))
        ax2.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax2.set_yticks(range(len(cols)), cols)
        ax2.set_title("2-way marginals")
        fig.colorbar(im, ax=ax2, label="total variation distance")
        fig.suptitle(f"{self.method.upper()} view, eps={self.epsilon:.3g}, delta={self.delta:.2g}")
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, format="png", dpi=90)
        plt.close(fig)
        return out


@dataclass(frozen=True)
class SyntheticView:
    """A sampled DP synthetic frame and what it cost."""

    frame: pd.DataFrame
    epsilon: float
    delta: float
    method: str
    fidelity: FidelityReport


@dataclass
class _Col:
    name: str
    kind: Literal["int", "float", "cat"]
    dtype: Any
    bounds: tuple[float, float] | None = None
    edges: list[float] = field(default_factory=list)  # bin edges for numeric columns
    labels: dict[str, Any] = field(default_factory=dict)  # string -> original value (cat)
    numeric_labels: dict[float, str] = field(default_factory=dict)  # a number's category label


def _classify(df: pd.DataFrame) -> list[_Col]:
    cols = []
    for name in df.columns:
        if not isinstance(name, str) or name == "len":
            raise SyntheticDataError(f"column names must be strings other than 'len': {name!r}")
        s = df[name]
        if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
            cols.append(_Col(name, "cat", s.dtype))
        elif pd.api.types.is_integer_dtype(s):
            cols.append(_Col(name, "int", s.dtype))
        elif pd.api.types.is_float_dtype(s):
            cols.append(_Col(name, "float", s.dtype))
        elif pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
            cols.append(_Col(name, "cat", s.dtype))
        else:
            raise SyntheticDataError(f"column {name!r} has unsupported type {s.dtype}")
    return cols


def _dp_bounds(name: str, values: np.ndarray, epsilon: float,
               d_in: int = D_IN) -> tuple[tuple[float, float], float]:
    """DP range of a column: a Laplace histogram over the public log grid; the bounds are the
    outer edges of the first and last bins whose noisy count clears a noise-only threshold.

    (DP quantiles on a coarse grid tie for every candidate beyond the data and then pick
    absurd values; thresholded bins do not.)
    """
    edges = _log_grid()
    space = (dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance())

    def make(scale: float) -> Any:
        return (
            space
            >> dp.t.then_find_bin(edges=edges)
            >> dp.t.then_count_by_categories(
                categories=list(range(1, len(edges))), null_category=True
            )
            >> dp.m.then_laplace(scale)
        )

    scale = calibrate(make, epsilon, 1.0 / epsilon, d_in=d_in)
    meas = make(scale)
    counts = meas(values.tolist())[:-1]
    threshold = scale * math.log(len(edges) / _BOUNDS_FAILURE)
    above = [i for i, c in enumerate(counts) if c > threshold]
    if not above:
        raise SyntheticDataError(
            f"too few rows to choose DP bounds for {name!r} at this epsilon; pass bounds"
        )
    return (edges[above[0]], edges[above[-1] + 1]), float(meas.map(d_in))


def bounds_min_epsilon(rows: int, columns: int, contributions: int = 1) -> float:
    """The smallest total epsilon at which DP bounds for ``columns`` numeric columns can work
    on ``rows`` rows: a grid bin must clear the noise-only threshold of :func:`_dp_bounds`,
    and with data spread over a few bins (one per quarter decade) the fullest holds about a
    quarter of the rows.
    Data-independent (rows are the provider's own count), so safe to show the provider."""
    if rows < 1 or columns < 1:
        return math.inf if columns >= 1 else 0.0
    per_column_threshold = math.log(len(_log_grid()) / _BOUNDS_FAILURE)  # times 1/eps_b
    return 4.0 * per_column_threshold * columns * contributions / (_BOUNDS_SHARE * rows)


def _numeric_edges(col: _Col, n_bins: int) -> list[float]:
    """Edges E_0 < ... < E_m; bin i is [E_i, E_i+1) (the last one closed). Integer bins hold
    whole numbers E_i .. E_i+1 - 1; small integer ranges get one bin per value."""
    assert col.bounds is not None
    lo, hi = col.bounds
    if col.kind == "int":
        lo_i, hi_i = math.ceil(lo), math.floor(hi)
        if hi_i < lo_i:
            raise SyntheticDataError(f"integer bounds of {col.name!r} hold no integer")
        if hi_i - lo_i + 1 <= n_bins:
            return [float(v) for v in range(lo_i, hi_i + 2)]
        steps = np.linspace(lo_i, hi_i + 1, n_bins + 1)
        return [float(v) for v in sorted({round(x) for x in steps})]
    return [float(x) for x in np.linspace(lo, hi, n_bins + 1)]


def _bin_index(arr: np.ndarray, edges: list[float]) -> np.ndarray:
    e = np.asarray(edges)
    i = np.searchsorted(e, np.clip(arr, e[0], e[-1]), side="right") - 1
    return np.clip(i, 0, len(e) - 2)


def _to_polars(df: pd.DataFrame, cols: list[_Col]) -> pl.DataFrame:
    """Every column becomes a string column: categories as text, numbers as public bin codes
    (a row-wise, data-independent map), null kept as null so null rates are modelled."""
    data: dict[str, pl.Series] = {}
    for c in cols:
        s = df[c.name]
        if c.numeric_labels:  # a number modelled as a category: values outside it are null
            vals = [None if _isna(v) else c.numeric_labels.get(float(v)) for v in s.tolist()]
        elif c.kind == "cat":
            vals = [None if _isna(v) else str(v) for v in s.tolist()]
        else:
            arr = s.to_numpy(dtype=float, na_value=np.nan)
            idx = _bin_index(np.nan_to_num(arr), c.edges)
            codes = np.array([f"b{i}" for i in range(len(c.edges) - 1)], dtype=object)[idx]
            codes[np.isnan(arr)] = None
            vals = codes.tolist()
        data[c.name] = pl.Series(c.name, vals, dtype=pl.String)
    return pl.DataFrame(data)


def _isna(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _domain(cols: list[_Col]) -> Any:
    return dp.lazyframe_domain(
        [dp.series_domain(c.name, dp.option_domain(dp.atom_domain(T="String"))) for c in cols]
    )


def fit_synthetic(
    df: pd.DataFrame,
    *,
    epsilon: float,
    delta: float | None = None,
    method: Method = "auto",
    bounds: Mapping[str, tuple[float, float]] | None = None,
    categories: Mapping[str, Sequence[Any]] | None = None,
    rows: int,
    seed: int | None = None,
    n_bins: int = 16,
    progress: Callable[[str], None] | None = None,
    contributions: int = D_IN,
) -> SyntheticView:
    """Fit a DP marginal model of ``df`` and sample a view of ``rows`` rows.

    ``bounds``/``categories`` given here are treated as public; categories may be given for a
    numeric column too (a 1/2 code), which is then modelled as a category, never binned.
    ``delta`` defaults to 1e-9 and is only spent when some categorical column has no public
    categories (key discovery); otherwise the fit is pure eps-DP and the view reports
    delta = 0. ``progress`` is told each phase as it starts ("bounds", "model", "sampling",
    "fidelity"). ``contributions`` is how many rows of ``df`` one privacy unit can hold at
    most (the caller has bounded it): every spend is OpenDP's map at that distance.
    """
    def phase(name: str) -> None:
        if progress is not None:
            progress(name)

    t0 = time.perf_counter()
    eps = check_epsilon(epsilon)
    dlt = 1e-9 if delta is None else check_delta(delta)
    if method not in ("auto", "copula", "mst", "aim"):
        raise InvalidParameterError(
            f"unknown method {method!r}; use 'auto', 'copula', 'mst' or 'aim'")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise InvalidParameterError("rows must be a positive integer")
    if isinstance(contributions, bool) or not isinstance(contributions, int) \
            or contributions < 1:
        raise InvalidParameterError("contributions must be a positive integer")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 2 <= n_bins <= 256:
        raise InvalidParameterError("n_bins must be an integer in [2, 256]")
    if not isinstance(df, pd.DataFrame) or df.shape[1] == 0:
        raise InvalidParameterError("data must be a pandas DataFrame with at least one column")
    cols = _classify(df)
    by_name = {c.name: c for c in cols}
    bounds = dict(bounds or {})
    categories = dict(categories or {})
    for name, b in bounds.items():
        if name not in by_name or by_name[name].kind == "cat":
            raise InvalidParameterError(f"bounds given for {name!r}, which is not a numeric column")
        by_name[name].bounds = check_bounds(b, f"bounds of {name!r}")
    public_keys: dict[str, list[str]] = {}
    for name, cats in categories.items():
        if name not in by_name:
            raise InvalidParameterError(f"categories given for {name!r}, which is not a column")
        if name in bounds:
            raise InvalidParameterError(f"{name!r} has both bounds and categories; choose one")
        if isinstance(cats, str | bytes) or not isinstance(cats, Sequence) or not cats:
            raise InvalidParameterError(f"categories of {name!r} must be a non-empty list")
        labels = [str(v) for v in cats]
        if len(set(labels)) != len(labels):
            raise InvalidParameterError(f"categories of {name!r} contain duplicates")
        col = by_name[name]
        if col.kind != "cat":
            if any(isinstance(v, bool) or not isinstance(v, int | float) for v in cats):
                raise InvalidParameterError(
                    f"categories of numeric column {name!r} must be numbers")
            floats = [float(v) for v in cats]
            if len(set(floats)) != len(floats):
                raise InvalidParameterError(f"categories of {name!r} contain duplicates")
            col.kind = "cat"
            col.numeric_labels = dict(zip(floats, labels, strict=True))
        col.labels = dict(zip(labels, cats, strict=True))
        public_keys[name] = labels

    if method == "auto":  # the copula keeps correlations; MST can discover categories
        undiscovered = any(c.kind == "cat" and c.name not in public_keys
                           and not pd.api.types.is_bool_dtype(c.dtype) for c in cols)
        method = "mst" if undiscovered or dlt == 0.0 else "copula"
    if dlt == 0.0 and any(c.kind == "cat" and c.name not in public_keys for c in cols):
        raise InvalidParameterError(
            "delta must be > 0 unless every categorical column has public categories"
        )

    spend: dict[str, float] = {}
    need_bounds = [c for c in cols if c.kind != "cat" and c.bounds is None]
    eps_table = eps
    if need_bounds:
        phase("bounds")
        eps_b = eps * _BOUNDS_SHARE / len(need_bounds)
        failed = []
        for c in need_bounds:
            vals = df[c.name].to_numpy(dtype=float, na_value=np.nan)
            try:
                c.bounds, spent = _dp_bounds(c.name, vals[~np.isnan(vals)], eps_b, contributions)
            except SyntheticDataError:
                failed.append(c.name)
                spent = eps_b  # the release happened; it found nothing above the noise
            spend[f"bounds:{c.name}"] = spent
        if failed:
            raise SyntheticDataError(
                f"too few rows to choose DP bounds at epsilon {eps:g} for "
                f"{', '.join(map(repr, failed))}: give their public bounds "
                f"(policy: bounds = {{ {failed[0]} = [lower, upper], ... }}) or raise epsilon "
                f"to at least {bounds_min_epsilon(len(df), len(need_bounds), contributions):.3g}")
        eps_table = eps - math.fsum(spend.values())
    if method == "copula":
        return _fit_copula(df, cols, public_keys, eps, eps_table, dlt, rows, seed, spend,
                           contributions, phase, t0)
    for c in cols:
        if c.kind != "cat":
            c.edges = _numeric_edges(c, n_bins)

    for c in cols:
        if c.kind != "cat":
            public_keys[c.name] = [f"b{i}" for i in range(len(c.edges) - 1)]
    all_public = all(c.name in public_keys for c in cols)
    dlt_table = 0.0 if all_public else dlt
    measure = dp.max_divergence() if all_public else dp.approximate(dp.max_divergence())
    d_out: Any = eps_table if all_public else (eps_table, dlt_table)
    algorithm = SafeMST() if method == "mst" else SafeAIM()
    try:
        meas, _, _ = dp.mbi.make_contingency_table(
            _domain(cols), dp.symmetric_distance(), measure,
            d_in=contributions,  # type: ignore[arg-type]  # the SymmetricDistance bound
            d_out=d_out, keys=public_keys, algorithm=algorithm,
        )
    except (dp.OpenDPException, ValueError) as exc:
        raise SyntheticDataError(f"cannot build the {method} model: {exc}") from None
    spent_table = meas.map(contributions)
    eps_t, dlt_t = spent_table if isinstance(spent_table, tuple) else (spent_table, 0.0)
    spend["model"] = float(eps_t)

    phase("model")
    real = _to_polars(df, cols)
    table = meas(real.lazy())
    phase("sampling")
    frame = _sample(table, cols, rows, seed)
    modelled = sorted({"|".join(sorted(c)) for c in table.model.cliques if len(c) >= 2})
    total_eps = math.fsum(spend.values())
    phase("fidelity")
    fidelity = _fidelity(df, frame, cols, total_eps, float(dlt_t), method, rows, spend)
    fidelity = replace(fidelity, modelled_pairs=modelled)
    spend["seconds"] = round(time.perf_counter() - t0, 3)
    return SyntheticView(frame, total_eps, float(dlt_t), method, fidelity)


def _fit_copula(df: pd.DataFrame, cols: list[_Col], public_keys: dict[str, list[str]],
                eps: float, eps_left: float, dlt: float, rows: int, seed: int | None,
                spend: dict[str, float], contributions: int,
                phase: Callable[[str], None], t0: float) -> SyntheticView:
    """The copula's path through :func:`fit_synthetic` (bounds are already chosen)."""
    from veil.privacy.copula import CopulaColumn, fit_copula

    for c in cols:  # booleans have public keys by type
        if c.kind == "cat" and c.name not in public_keys and pd.api.types.is_bool_dtype(c.dtype):
            public_keys[c.name] = ["False", "True"]
    missing = [c.name for c in cols if c.kind == "cat" and c.name not in public_keys]
    if missing:
        raise SyntheticDataError(
            f"the copula needs public categories for {', '.join(map(repr, missing))} "
            f"(policy: categories = {{ {missing[0]} = [...] }}), or use method 'mst'")
    fitted = []
    for c in cols:
        if c.kind == "cat":
            fitted.append(CopulaColumn(c.name, labels=public_keys[c.name]))
        else:
            assert c.bounds is not None
            fitted.append(CopulaColumn(c.name, c.bounds, integer=c.kind == "int"))
    labelled = df.copy()  # categories as their text labels, as the MST path sees them
    for c in cols:
        if c.kind == "cat":
            labelled[c.name] = [
                None if _isna(v) else c.numeric_labels.get(float(v)) if c.numeric_labels
                else str(v) for v in df[c.name].tolist()]
    phase("model")
    fit = fit_copula(labelled, fitted, epsilon=eps_left, delta=dlt, rows=rows, seed=seed,
                     d_in=contributions)
    for c, f in zip(cols, fitted, strict=True):
        c.edges = list(f.edges)  # the fine bins it chose: fidelity's TV uses them
    spend["model"] = fit.epsilon
    phase("sampling")
    out = {}
    for c in cols:
        raw = fit.frame[c.name]
        is_null = raw.isna().to_numpy()
        if c.kind == "cat":
            out[c.name] = _typed_category(c, [None if n else v for v, n in
                                              zip(raw.tolist(), is_null.tolist(), strict=True)],
                                          is_null)
        else:
            out[c.name] = _typed_number(c, raw.to_numpy(dtype=float), is_null)
    frame = pd.DataFrame(out)
    total_eps = eps - eps_left + fit.epsilon
    phase("fidelity")
    fidelity = _fidelity(df, frame, cols, total_eps, fit.delta, "copula", rows, spend)
    fidelity = replace(fidelity, modelled_pairs=fit.kept_pairs)
    spend["seconds"] = round(time.perf_counter() - t0, 3)
    return SyntheticView(frame, total_eps, fit.delta, "copula", fidelity)


def _sample(table: Any, cols: list[_Col], rows: int, seed: int | None) -> pd.DataFrame:
    """Draw bin indices from the model, then un-bin, fix stray nulls and shuffle."""
    rng = np.random.default_rng(seed)
    state = np.random.get_state()  # mbi samples with numpy's global generator
    try:
        np.random.seed(int(rng.integers(2**32 - 1)))
        # "sample" (i.i.d.), not "round": round stratifies siblings by the same row ranks, which
        # makes columns sharing a parent spuriously comonotone
        idx = table.model.synthetic_data(rows, method="sample").df
    finally:
        np.random.set_state(state)
    out: dict[str, Any] = {}
    for c in cols:
        keys = table.keys[c.name]
        null_at = keys.is_null().arg_true().to_list()
        null_idx = null_at[0] if null_at else -1
        ix = idx[c.name].to_numpy().astype(np.int64)
        is_null = ix == null_idx
        # stray nulls: a null cell whose model mass is within noise of zero is an artefact
        if is_null.any() and _null_is_noise(table, c.name, null_idx):
            fill = ix[~is_null]
            if fill.size:
                ix = ix.copy()
                ix[is_null] = rng.choice(fill, size=int(is_null.sum()))
                is_null = np.zeros_like(is_null)
        out[c.name] = _unbin(c, ix, is_null, keys, rng)
    frame = pd.DataFrame(out)
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def _null_is_noise(table: Any, name: str, null_idx: int) -> bool:
    counts = np.asarray(table.project([name]), dtype=float).ravel()
    total = max(counts.sum(), 1.0)
    try:
        std = float(table.std([name]))
    except ValueError:
        std = 0.01 * total
    return bool(counts[null_idx] <= 4.0 * std or counts[null_idx] / total < 1e-4)


def _unbin(
    c: _Col, ix: np.ndarray, is_null: np.ndarray, keys: Any, rng: np.random.Generator
) -> Any:
    safe = np.where(is_null, 0, ix)
    if c.kind == "cat":
        labels = keys.to_list()
        return _typed_category(c, [None if n else labels[i] for i, n in
                                   zip(safe.tolist(), is_null.tolist(), strict=True)], is_null)
    codes = keys.to_list()
    bins = np.array([int(codes[i][1:]) if codes[i] else 0 for i in safe], dtype=np.int64)
    e = np.asarray(c.edges)
    width = e[bins + 1] - e[bins]
    if c.kind == "int":
        vals = e[bins] + np.floor(rng.random(len(bins)) * width)
    else:
        vals = e[bins] + rng.random(len(bins)) * width
    return _typed_number(c, vals, is_null)


def _typed_category(c: _Col, vals: list[Any], is_null: np.ndarray) -> pd.Series:
    """Category labels (text, null as None) back in the column's own type."""
    if c.numeric_labels:
        nums = pd.Series([np.nan if v is None else float(c.labels[v]) for v in vals])
        if pd.api.types.is_integer_dtype(c.dtype):
            return nums.astype("Int64") if is_null.any() else nums.astype(c.dtype)
        return nums.astype(c.dtype)
    if c.labels:
        vals = [None if v is None else c.labels.get(v, v) for v in vals]
    elif pd.api.types.is_bool_dtype(c.dtype):
        vals = [None if v is None else v == "True" for v in vals]
    s = pd.Series(vals, dtype=object)
    if isinstance(c.dtype, pd.CategoricalDtype):
        return s.astype(c.dtype)
    if pd.api.types.is_bool_dtype(c.dtype):
        return s.astype("boolean") if is_null.any() else s.astype(bool)
    return s.astype(c.dtype) if not pd.api.types.is_object_dtype(c.dtype) else s


def _typed_number(c: _Col, vals: np.ndarray, is_null: np.ndarray) -> pd.Series:
    """Numbers clipped to the column's edges, in its own type, null where ``is_null``."""
    e = np.asarray(c.edges)
    if c.kind == "int":
        res = pd.Series(np.clip(np.nan_to_num(vals, nan=e[0]), e[0], e[-1] - 1).astype(np.int64))
        if is_null.any():
            return res.astype("Int64").mask(is_null)
        return res.astype(c.dtype)
    vals_f = np.clip(vals, e[0], e[-1]).astype(float)
    vals_f[is_null] = np.nan
    return pd.Series(vals_f).astype(c.dtype if pd.api.types.is_float_dtype(c.dtype) else float)


def _codes(s: pd.Series, c: _Col) -> np.ndarray:
    """Bin codes shared by real and synthetic data for fidelity (-1 = null or unseen)."""
    if c.kind == "cat":
        str_vals = pd.Series([None if _isna(v) else str(v) for v in s.tolist()], dtype=object)
        cats = pd.Categorical(str_vals, categories=sorted(set(str_vals.dropna())))
        return np.asarray(cats.codes, dtype=np.int64)
    arr = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    codes = _bin_index(np.nan_to_num(arr), c.edges)
    return np.where(np.isnan(arr), -1, codes).astype(np.int64)


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    pa = pd.Series(a).value_counts(normalize=True)
    pb = pd.Series(b).value_counts(normalize=True)
    joined = pd.concat([pa, pb], axis=1).fillna(0.0)
    return float(0.5 * np.abs(joined.iloc[:, 0] - joined.iloc[:, 1]).sum())


def _fidelity(
    real: pd.DataFrame, syn: pd.DataFrame, cols: list[_Col], eps: float, delta: float,
    method: str, rows: int, spend: dict[str, float],
) -> FidelityReport:
    rc, sc = {}, {}
    for c in cols:
        if c.kind == "cat":  # shared category codes over the union of values
            both = pd.concat([real[c.name], syn[c.name]], ignore_index=True)
            codes = _codes(both, c)
            rc[c.name], sc[c.name] = codes[: len(real)], codes[len(real) :]
        else:
            rc[c.name], sc[c.name] = _codes(real[c.name], c), _codes(syn[c.name], c)
    one = {c.name: _tv(rc[c.name], sc[c.name]) for c in cols}
    pairs = {}
    for a, b in combinations([c.name for c in cols], 2):
        ra = rc[a] * (int(max(rc[b].max(initial=0), sc[b].max(initial=0))) + 2) + rc[b]
        sa = sc[a] * (int(max(rc[b].max(initial=0), sc[b].max(initial=0))) + 2) + sc[b]
        pairs[f"{a}|{b}"] = _tv(ra, sa)
    return FidelityReport(one, pairs, eps, delta, method, rows, dict(spend))
