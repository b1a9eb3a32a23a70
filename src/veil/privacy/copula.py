"""A DP Gaussian copula: the synthesiser that keeps correlations (``method = "copula"``).

MST and AIM model a few 2-way marginals over coarse bins, so wherever many columns are
related they keep almost none of it (diabetes at eps 1: mean |delta corr| 0.34). A copula
spends the budget on what analysts read — every pairwise correlation at once — and on fine
1-way marginals (Li, Xiong & Jiang, "DPCopula", EDBT 2014; here with Gaussian noise under
zero-concentrated DP and a spectral clean-up of the noisy matrix).

Everything that reads the data is one OpenDP adaptive composition under zCDP
(``make_adaptive_composition``, then ``make_zCDP_to_approxDP`` and ``make_fix_delta``), mapped
at ``d_in`` = the contribution bound:

1. per column, a histogram over public bins (numbers: equal-width bins inside the public or
   DP bounds; categories: the public keys) with a null bin: ``make_count_by_categories`` into
   L2 counts and OpenDP's Gaussian;
2. each row becomes normal scores ``z = Phi^-1(F(x))`` under the *released* marginals (a
   row-wise map of DP outputs), scaled to L2 norm at most ``C``; the sum of the products
   ``z_a z_b`` (a <= b) moves by at most ``C**2`` in L2 when a row comes or goes, so the
   Gaussian's zCDP cost is ``(d_in * C**2)**2 / (2 scale**2)`` — OpenDP's own map. The
   row-wise map and the summing transformation are ``make_user_transformation`` (OpenDP's
   ``honest-but-curious``), with that stability.

Post-processing, no privacy cost: negative counts clamp to zero; the noisy matrix becomes a
correlation matrix; eigen-directions within the noise's spectral norm (``2 tau sqrt(d)``, tau
the entries' noise over the DP row count) are dropped, the rest kept as a factor model with
unit diagonal (always positive definite); rows are drawn as ``N(0, R)`` and pushed through
each column's inverse released CDF. Null is independent of the other columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from veil.privacy._opendp import dp, features
from veil.privacy.errors import SyntheticDataError

__all__ = ["CopulaColumn", "CopulaFit", "fit_copula"]

_FEATURES = ("honest-but-curious",)
_MARGINAL_SHARE = 0.3  # of rho: the 1-way histograms; the rest goes to the correlations
_Z_CLIP = 3.5  # normal scores beyond this are clipped (u within ~2e-4 of 0 or 1)
_NORM = (1.0, 2.0)  # rows are scaled to L2 norm <= sqrt(norm * d) in normal-score space
_BIAS_OR_NOISE = 0.01  # ... with the largest norm whose noise on a correlation stays below
_CHUNK = 65_536  # rows per block when summing the products (bounded memory)
_COARSE_SHARE = 0.25  # of a number's histogram budget: the pass that places its fine bins
_COARSE = 16  # bins of that pass
_MIN_BINS, _MAX_BINS = 4, 128
KEPT = 0.2  # |correlation| at which the model reports a pair as kept (public summary)


@dataclass
class CopulaColumn:
    """One fitted column: a number inside public ``bounds`` (``integer`` ones hold whole
    numbers), or a category over ``labels`` (the public keys, in the policy's order: that
    order is the one the copula's correlations see). ``edges`` are set by the fit."""

    name: str
    bounds: tuple[float, float] = (0.0, 1.0)
    integer: bool = False
    labels: Sequence[Any] = ()
    edges: list[float] = field(default_factory=list)

    @property
    def bins(self) -> int:
        return len(self.labels) if self.labels else len(self.edges) - 1

    #: Whether a decimal column's histogram counts whole numbers apart from the rest, so a
    #: column of mostly whole values (prices, 56.0 %) is drawn as whole values, not smeared.
    #: The fit sets it where there are rows enough for the doubled histogram.
    split_whole: bool = False

    @property
    def categories(self) -> int:
        return self.bins * (2 if self.split_whole else 1)


@dataclass(frozen=True)
class CopulaFit:
    frame: pd.DataFrame
    epsilon: float
    delta: float
    rho: dict[str, float]
    correlation: np.ndarray  # the cleaned DP correlation matrix (a DP output)
    kept_pairs: list[str]


def bin_count(rows: int, columns: int, epsilon: float, delta: float, d_in: int = 1) -> int:
    """How many bins a numeric column's fine histogram can afford: each bin should hold about
    three times the histogram noise. From public figures only (the view's row count and the
    budget), so choosing it leaks nothing."""
    return _bins_for(rows, _scales(_rho_for(epsilon, delta), columns, d_in, rows)[1])


def _bins_for(rows: int, sigma: float) -> int:
    return int(min(_MAX_BINS, max(_MIN_BINS, rows // (3 * sigma))))


def _scales(rho: float, d: int, d_in: int, rows: int) -> tuple[float, float, float]:
    """Noise scales of the coarse and fine histograms (per column) and of the products'
    sum, splitting ``rho``: ``_MARGINAL_SHARE`` to the histograms, the rest to the
    correlations. A number's coarse pass takes ``_COARSE_SHARE`` of its histogram budget,
    only where the fine pass can afford more bins than the coarse one has (else there is
    no coarse pass: coarse scale 0). Counts move by ``d_in`` in L2."""
    per_column = rho * _MARGINAL_SHARE / d
    fine = d_in / math.sqrt(2 * per_column * (1 - _COARSE_SHARE))
    if _bins_for(rows, fine) <= _COARSE:
        coarse, fine = 0.0, d_in / math.sqrt(2 * per_column)
    else:
        coarse = d_in / math.sqrt(2 * per_column * _COARSE_SHARE)
    products = d_in * _row_bound(rho, d, d_in, rows) / math.sqrt(2 * rho * (1 - _MARGINAL_SHARE))
    return coarse, fine, products


def _row_bound(rho: float, d: int, d_in: int, rows: int) -> float:
    """The squared L2 norm rows are scaled to before their products are summed. Scaling a
    row shrinks strong correlations a little (rows far out lie along them); a larger bound
    costs noise. With many rows noise is small and the bias shows, so the bound is the
    largest that keeps a correlation's noise below ``_BIAS_OR_NOISE``, within ``_NORM``
    times ``d`` (public figures only)."""
    norm = _BIAS_OR_NOISE * rows * math.sqrt(2 * rho * (1 - _MARGINAL_SHARE)) / (d * d_in)
    return min(max(norm, _NORM[0]), _NORM[1]) * d


def _rho_for(epsilon: float, delta: float) -> float:
    """The zCDP rho that OpenDP's conversion turns into (epsilon, delta): one Gaussian,
    calibrated by OpenDP's own map."""
    one = lambda s: dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(  # noqa: E731
        dp.m.make_gaussian(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float),
                           s)), delta)
    scale = float(dp.binary_search_param(one, d_in=1.0, d_out=(epsilon, delta), T=float))
    return 1.0 / (2.0 * scale * scale)


def _space(d: int) -> tuple[Any, Any]:
    """Rows of ``d`` values then ``d`` null flags (see :func:`encode`)."""
    return dp.numpy.array2_domain(num_columns=2 * d, T=float, nan=False), \
        dp.symmetric_distance()


def encode(df: pd.DataFrame, cols: Sequence[CopulaColumn]) -> np.ndarray:
    """Row-wise: each column's value (a category's index in its labels, -1 outside them),
    0 where null; then one null flag per column."""
    d = len(cols)
    out = np.zeros((len(df), 2 * d), dtype=float)
    for j, c in enumerate(cols):
        s = df[c.name]
        if c.labels:
            index = {str(v): i for i, v in enumerate(c.labels)}
            codes = [-2 if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
                     else index.get(str(v), -1) for v in s.tolist()]
            arr = np.asarray(codes, dtype=float)
            out[:, j], out[:, d + j] = np.maximum(arr, -1.0), arr == -2
            continue
        arr = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        out[:, j], out[:, d + j] = np.nan_to_num(arr), np.isnan(arr)
    return out


def _positions(x: np.ndarray, j: int, d: int, col: CopulaColumn,
               edges: Sequence[float]) -> np.ndarray:
    """Column ``j`` of encoded rows as bin index + position inside the bin (a whole number
    n in [E, F) holds the slot (n - E + 1/2) / (F - E)); -1 for null (row-wise)."""
    v, null = x[:, j], x[:, d + j] > 0
    if col.labels:
        return np.where(null, -1.0, v)  # outside the labels counts as null too
    e = np.asarray(edges, dtype=float)
    v = np.clip(v, e[0], e[-1] - (1 if col.integer else 0))
    idx = np.clip(np.searchsorted(e, v, side="right") - 1, 0, len(e) - 2)
    within = (v - e[idx] + (0.5 if col.integer else 0.0)) / (e[idx + 1] - e[idx])
    return np.where(null, -1.0, idx + np.clip(within, 0.0, 0.999999))


def _histogram(j: int, d: int, col: CopulaColumn, edges: Sequence[float], split: bool,
               scale: float) -> Any:
    """Column ``j``'s counts over ``edges`` (whole numbers apart when ``split``; null last)
    with Gaussian noise. Each row lands in exactly one category: a row-wise, 1-stable map."""
    domain, metric = _space(d)
    bins = len(col.labels) if col.labels else len(edges) - 1

    def category(x: np.ndarray) -> list[int]:
        k = np.floor(_positions(x, j, d, col, edges)).astype(np.int64)
        if split:
            k = k + bins * (x[:, j] == np.round(x[:, j]))
        return np.where(x[:, d + j] > 0, -1, k).tolist()

    column = dp.t.make_user_transformation(
        domain, metric, dp.vector_domain(dp.atom_domain(T="i64")), metric, category,
        lambda d_in: d_in)
    return column >> dp.t.then_count_by_categories(
        categories=list(range(bins * (2 if split else 1))), null_category=True,
        MO="L2Distance<i64>", TOA="i64") >> dp.m.then_gaussian(scale)


def _even_edges(lo: float, hi: float, bins: int, integer: bool) -> list[float]:
    """``bins`` equal-width bins over [lo, hi]; whole-number edges (one bin per value at
    most) for integers."""
    if integer:
        lo_i, hi_i = math.ceil(lo), math.floor(hi)
        return [float(v) for v in sorted({round(x) for x in np.linspace(lo_i, hi_i + 1,
                                                                        bins + 1)})]
    return [float(x) for x in np.linspace(lo, hi, bins + 1)]


def _refine(coarse: Sequence[float], masses: np.ndarray, bins: int,
            integer: bool) -> list[float]:
    """Split each coarse bin into sub-bins in proportion to its released mass, so the fine
    bins hold similar numbers of rows: narrow where the data are, wide in the tails
    (post-processing of the coarse release)."""
    total = float(masses.sum())
    edges: list[float] = []
    for i in range(len(coarse) - 1):
        parts = max(1, round(bins * float(masses[i]) / total)) if total > 0 else 1
        edges.extend(_even_edges(coarse[i], coarse[i + 1], parts, False)[:-1])
    edges.append(float(coarse[-1]))
    if integer:
        edges = sorted({float(round(e)) for e in edges})
    return edges


class _Marginal:
    """A released histogram as a CDF: ``u`` of a bin position and its inverse."""

    def __init__(self, counts: np.ndarray, bins: int, scale: float = 0.0,
                 threshold: bool = True, support: np.ndarray | None = None,
                 present: np.ndarray | None = None) -> None:
        # Noise in empty categories must not pass for rows: a hundred rows far out in a tail
        # halve a Pearson correlation. ``strict`` leaves a spurious category among empty ones
        # one time in a hundred. With a ``support`` (the bins whose coarse parent held rows)
        # bins outside it are empty and those inside only lose what is within one noise
        # scale of zero; whole-number counts and null are always cut strictly (in a column
        # without them, all of them are noise). Without a support (few rows: one pass) the
        # strict cut applies, falling to one noise scale where it would empty the histogram.
        # ``present`` says which parts (decimals, whole numbers) the coarse pass saw at all.
        # Categories are public (``threshold=False``): a small count there is real.
        counts = np.asarray(counts, dtype=float)
        strict = scale * float(ndtri(1.0 - 0.01 / len(counts)))
        parts = counts[:-1].reshape(-1, bins).copy()
        if support is not None:
            parts[:, ~support] = 0.0
            parts = np.where(parts > scale, parts, 0.0)
            if present is not None:
                parts[~present] = 0.0
        elif threshold:
            cut = strict
            if parts[parts > cut].sum() < 0.5 * max(counts.sum(), 0.0):
                cut = scale
            parts = np.where(parts > cut, parts, 0.0)
        else:
            parts = np.maximum(parts, 0.0)
        null = counts[-1] if counts[-1] > strict else 0.0
        p = parts.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.whole = np.where(p > 0, parts[-1] / p, 0.0) if len(parts) == 2 \
                else np.zeros(bins)
        self.total = float(counts.sum())  # unthresholded: an unbiased count of rows
        shares = parts.sum(axis=1)
        self.shares = shares / shares.sum() if shares.sum() > 0 else shares
        self.null_rate = float(min(null / self.total, 1.0)) if self.total > 0 else 0.0
        self.p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))
        self.cdf = np.concatenate([[0.0], np.cumsum(self.p)])

    def scores(self, pos: np.ndarray, discrete: bool) -> np.ndarray:
        """Normal scores of bin positions (bin index + fraction); null (-1) scores 0."""
        k = np.clip(np.floor(pos).astype(int), 0, len(self.p) - 1)
        frac = np.full(len(pos), 0.5) if discrete else pos - np.floor(pos)
        u = self.cdf[k] + frac * self.p[k]
        z = np.clip(ndtri(np.clip(u, 1e-12, 1 - 1e-12)), -_Z_CLIP, _Z_CLIP)
        return np.where(pos < 0, 0.0, z)

    def attenuation(self, discrete: bool) -> float:
        """How much a category's normal scores shrink its correlation with a Gaussian: the
        ratio of corr(g(D), Z) to corr(latent, Z), ``sum_k g_k (phi(a_k) - phi(a_k+1)) /
        sd(g)`` for thresholds ``a_k`` from the released CDF (post-processing). Numbers are
        spread over their bins, so they keep their correlations: 1."""
        if not discrete:
            return 1.0
        a = ndtri(np.clip(self.cdf, 0.0, 1.0))
        dens = np.exp(-0.5 * np.nan_to_num(a, posinf=np.inf, neginf=np.inf) ** 2) \
            / math.sqrt(2 * math.pi)
        g = np.clip(ndtri(np.clip(self.cdf[:-1] + 0.5 * self.p, 1e-12, 1 - 1e-12)),
                    -_Z_CLIP, _Z_CLIP)
        mean = float(np.sum(self.p * g))
        sd = math.sqrt(max(float(np.sum(self.p * g * g)) - mean * mean, 0.0))
        if sd == 0.0:
            return 1.0
        return float(np.clip(np.sum(g * (dens[:-1] - dens[1:])) / sd, 0.05, 1.0))

    def invert(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bin index and position inside it of uniforms ``u``."""
        k = np.clip(np.searchsorted(self.cdf, u, side="right") - 1, 0, len(self.p) - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(self.p[k] > 0, (u - self.cdf[k]) / self.p[k], 0.5)
        return k, np.clip(frac, 0.0, 1.0)


def _products(margins: Sequence[_Marginal], cols: Sequence[CopulaColumn], bound: float,
              d: int) -> Any:
    """Rows -> normal scores under the released marginals, scaled to L2 norm sqrt(bound),
    -> the sum of their products z_a z_b (a <= b): stability ``d_in * bound``."""
    iu = np.triu_indices(d)
    norm = math.sqrt(bound)

    def total(x: np.ndarray) -> np.ndarray:
        acc = np.zeros(len(iu[0]))
        for start in range(0, len(x), _CHUNK):
            block = x[start:start + _CHUNK]
            z = np.column_stack([m.scores(_positions(block, j, d, c, c.edges), bool(c.labels))
                                 for j, (m, c) in enumerate(zip(margins, cols, strict=True))])
            lengths = np.linalg.norm(z, axis=1)
            z *= np.minimum(1.0, norm / np.maximum(lengths, 1e-300))[:, None]
            acc += np.einsum("ni,nj->ij", z, z)[iu]
        return acc

    domain, metric = _space(d)
    out = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=len(iu[0]))
    return dp.t.make_user_transformation(domain, metric, out, dp.l2_distance(T=float),
                                         total, lambda d_in: float(d_in) * bound)


def _clean(sums: np.ndarray, d: int, tau: float, shrink: np.ndarray) -> np.ndarray:
    """Noisy sums of products -> a positive definite latent correlation matrix
    (post-processing): normalise, undo the categories' ``shrink`` (:meth:`_Marginal.
    attenuation`), drop the directions within the noise, keep a unit diagonal."""
    s = np.zeros((d, d))
    s[np.triu_indices(d)] = sums
    s = s + s.T - np.diag(np.diag(s))
    diag = np.maximum(np.diag(s), 1e-9)
    r = np.clip(s / np.sqrt(np.outer(diag, diag)) / np.outer(shrink, shrink), -0.999, 0.999)
    np.fill_diagonal(r, 1.0)
    vals, vecs = np.linalg.eigh(r)
    keep = vals > 2.0 * tau * math.sqrt(d)
    low = (vecs[:, keep] * vals[keep]) @ vecs[:, keep].T
    psi = np.maximum(1.0 - np.diag(low), min(0.05, max(tau, 1e-4)))
    cov = low - np.diag(np.diag(low)) + np.diag(np.diag(low) + psi)
    scale = 1.0 / np.sqrt(np.diag(cov))
    out = cov * np.outer(scale, scale)
    np.fill_diagonal(out, 1.0)
    return out


def _composition(cols: Sequence[CopulaColumn], scales: tuple[float, float, float],
                 d_in: int, bound: float) -> tuple[Any, list[float]]:
    """The adaptive zCDP composition: coarse histograms of the numbers, fine histograms of
    every column, the products. Their maps do not depend on the bins, so placeholders stand
    in for the bins the fit chooses as it goes."""
    d = len(cols)
    coarse, fine, products = scales
    numbers = [j for j, c in enumerate(cols) if not c.labels]
    placeholder = [CopulaColumn(c.name, c.bounds, c.integer, c.labels, [0.0, 1.0],
                                split_whole=coarse > 0 and not c.integer and not c.labels)
                   for c in cols]
    queries = [_histogram(j, d, placeholder[j], [0.0, 1.0], placeholder[j].split_whole, coarse)
               for j in numbers if coarse > 0]
    queries += [_histogram(j, d, c, c.edges, c.split_whole, fine)
                for j, c in enumerate(placeholder)]
    margins = [_Marginal(np.ones(c.categories + 1), c.bins) for c in placeholder]
    queries.append(_products(margins, placeholder, bound, d) >> dp.m.then_gaussian(products))
    d_mids = [float(q.map(d_in)) for q in queries]
    domain, metric = _space(d)
    comp = dp.c.make_adaptive_composition(domain, metric, dp.zero_concentrated_divergence(),
                                          d_in=d_in, d_mids=d_mids)
    return comp, d_mids


def _cost(comp: Any, d_in: int, delta: float) -> tuple[float, float]:
    eps, dlt = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(comp), delta).map(d_in)
    return float(eps), float(dlt)


def _calibrate(cols: Sequence[CopulaColumn], scales: tuple[float, float, float], d_in: int,
               bound: float, epsilon: float, delta: float) -> tuple[float, float, float]:
    """Scale every noise scale by the smallest factor whose composition OpenDP maps to at
    most ``epsilon`` (bisection; the map has the last word)."""
    def spent(k: float) -> float:
        return _cost(_composition(cols, tuple(v * k for v in scales),  # type: ignore[arg-type]
                                  d_in, bound)[0], d_in, delta)[0]

    lo, hi = 0.25, 4.0
    if spent(hi) > epsilon:  # pragma: no cover - the split is sized for epsilon
        raise SyntheticDataError("cannot calibrate the copula's noise to epsilon")
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if spent(mid) <= epsilon else (mid, hi)
        if hi - lo < 1e-7 * hi:
            break
    return tuple(v * hi for v in scales)  # type: ignore[return-value]


def fit_copula(df: pd.DataFrame, cols: Sequence[CopulaColumn], *, epsilon: float,
               delta: float, rows: int, seed: int | None = None,
               d_in: int = 1) -> CopulaFit:
    """Fit the copula on ``df`` at (epsilon, delta) and draw ``rows`` rows (module doc).
    Sets each numeric column's ``edges`` to the fine bins it chose."""
    if delta <= 0:
        raise SyntheticDataError("the copula adds Gaussian noise: it needs delta > 0")
    d = len(cols)
    if d == 0:
        raise SyntheticDataError("nothing to fit: no columns")
    x = encode(df, cols)
    with features(*_FEATURES):
        rho = _rho_for(epsilon, delta)
        bound = _row_bound(rho, d, d_in, rows)
        scales = _calibrate(cols, _scales(rho, d, d_in, rows), d_in, bound, epsilon, delta)
        comp, d_mids = _composition(cols, scales, d_in, bound)
        eps, dlt = _cost(comp, d_in, delta)
        coarse, fine, products = scales
        session = comp(x)
        bins = _bins_for(rows, fine)
        supports: dict[int, np.ndarray] = {}  # fine bins whose coarse parent held rows
        presents: dict[int, np.ndarray] = {}  # (decimals, whole numbers): seen at all?
        for j, c in enumerate(cols):
            if c.labels:
                continue
            if coarse == 0:  # few rows: even bins, all the budget on one pass
                c.edges = _even_edges(*c.bounds, bins, c.integer)
                continue
            c.split_whole = not c.integer
            first = _even_edges(*c.bounds, _COARSE, c.integer)
            counts = np.asarray(session(_histogram(j, d, c, first, c.split_whole, coarse)))
            rough = _Marginal(counts, len(first) - 1, coarse)
            mass = rough.p
            if c.split_whole:  # a part holding under 2 % of the rows is taken as absent
                presents[j] = rough.shares > 0.02
            c.edges = _refine(first, mass, bins, c.integer)
            mids = (np.asarray(c.edges[:-1]) + np.asarray(c.edges[1:])) / 2
            parent = np.clip(np.searchsorted(first, mids, side="right") - 1, 0, len(mass) - 1)
            supports[j] = mass[parent] > 0
        margins = [_Marginal(np.asarray(session(_histogram(j, d, c, c.edges, c.split_whole,
                                                           fine))), c.bins, fine,
                             threshold=not c.labels, support=supports.get(j),
                             present=presents.get(j))
                   for j, c in enumerate(cols)]
        sums = np.asarray(session(_products(margins, cols, bound, d)
                                  >> dp.m.then_gaussian(products)), dtype=float)
    n_hat = max(float(np.median([m.total for m in margins])), 1.0)
    # a null scores 0, so a pair's sum only sees rows where both are present: with null
    # rates q, the normalised sum shrinks by sqrt((1 - q_a)(1 - q_b)) on top of attenuation
    shrink = np.array([m.attenuation(bool(c.labels)) * math.sqrt(1.0 - min(m.null_rate, 0.99))
                       for m, c in zip(margins, cols, strict=True)])
    corr = _clean(sums, d, products / n_hat, shrink)
    frame = _sample(margins, cols, corr, rows, seed)
    kept = [f"{a.name}|{b.name}" for i, a in enumerate(cols) for j, b in enumerate(cols)
            if i < j and abs(corr[i, j]) >= KEPT]
    return CopulaFit(frame, eps, dlt, {"marginals": sum(d_mids[:-1]),
                                       "correlations": d_mids[-1]}, corr, sorted(kept))


def _sample(margins: Sequence[_Marginal], cols: Sequence[CopulaColumn], corr: np.ndarray,
            rows: int, seed: int | None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(np.zeros(len(cols)), corr, size=rows, method="eigh")
    u = ndtr(z)
    out: dict[str, Any] = {}
    for j, (c, m) in enumerate(zip(cols, margins, strict=True)):
        k, frac = m.invert(u[:, j])
        null = rng.random(rows) < m.null_rate
        if c.labels:
            out[c.name] = pd.Series([None if n else c.labels[i]
                                     for i, n in zip(k.tolist(), null.tolist(), strict=True)],
                                    dtype=object)
            continue
        e = np.asarray(c.edges, dtype=float)
        width = e[k + 1] - e[k]
        if c.integer:
            vals = np.clip(e[k] + np.minimum(np.floor(frac * width), width - 1), e[0], e[-1] - 1)
        else:
            vals = e[k] + frac * width
            whole = np.round(vals)  # the whole number nearest, if the bin holds one
            inside = (whole >= e[k]) & (whole < e[k + 1])
            vals = np.where((rng.random(rows) < m.whole[k]) & inside, whole, vals)
        out[c.name] = pd.Series(np.where(null, np.nan, vals))
    return pd.DataFrame(out)
