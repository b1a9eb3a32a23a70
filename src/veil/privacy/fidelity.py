"""How faithful a synthetic frame is to the real one: the figures a provider judges a view by.

Everything here reads the REAL data, so its results are provider-only (never shown to a
consumer, never DP): per-column Kolmogorov-Smirnov distance (numbers) or total variation
(categories), the change in each pairwise correlation, the relationships the view lost, and
train-synthetic-test-real (TSTR) against train-real-test-real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["LOST_CHANGE", "STRONG", "Comparison", "compare", "tstr"]

STRONG = 0.5  # a |correlation| at least this strong is a relationship worth keeping
LOST_CHANGE = 0.2  # ... and it is lost when the view moves it by more than this


@dataclass(frozen=True)
class Comparison:
    ks: dict[str, float]  # numeric columns: KS statistic
    tv: dict[str, float]  # categorical columns: total variation distance
    corr_delta: dict[str, float]  # "a|b" -> |corr_real - corr_syn|
    lost: list[str]  # strong real relationships the view does not keep

    @property
    def mean_corr_delta(self) -> float:
        return float(np.mean(list(self.corr_delta.values()))) if self.corr_delta else 0.0

    @property
    def max_ks(self) -> float:
        return max(self.ks.values(), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {"ks": self.ks, "tv": self.tv, "corr_delta": self.corr_delta,
                "mean_corr_delta": round(self.mean_corr_delta, 4),
                "max_ks": round(self.max_ks, 4), "lost_relationships": self.lost}


def _numeric(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Numbers as floats, booleans as 0/1, categories as their sorted-code: one matrix."""
    out = {}
    for c in columns:
        s = frame[c]
        if pd.api.types.is_bool_dtype(s) or str(s.dtype) == "boolean":
            out[c] = s.astype("float64")
        elif pd.api.types.is_numeric_dtype(s):
            out[c] = pd.to_numeric(s, errors="coerce").astype("float64")
    return pd.DataFrame(out)


def compare(real: pd.DataFrame, syn: pd.DataFrame) -> Comparison:
    from scipy.stats import ks_2samp

    columns = [c for c in real.columns if c in syn.columns]
    num_real, num_syn = _numeric(real, columns), _numeric(syn, columns)
    ks: dict[str, float] = {}
    tv: dict[str, float] = {}
    for c in columns:
        if c in num_real.columns and real[c].nunique(dropna=True) > 2:
            a, b = num_real[c].dropna(), num_syn[c].dropna()
            ks[c] = round(float(ks_2samp(a, b).statistic), 4) if len(a) and len(b) else 1.0
        else:
            pa = real[c].astype(str).value_counts(normalize=True)
            pb = syn[c].astype(str).value_counts(normalize=True)
            joined = pd.concat([pa, pb], axis=1).fillna(0.0)
            tv[c] = round(float(0.5 * (joined.iloc[:, 0] - joined.iloc[:, 1]).abs().sum()), 4)
    names = [str(c) for c in num_real.columns]
    cr = num_real.corr().to_numpy(dtype=float)
    cs = num_syn.reindex(columns=num_real.columns).corr().to_numpy(dtype=float)
    delta: dict[str, float] = {}
    lost: list[str] = []
    for (i, ca), (j, cb) in combinations(enumerate(names), 2):
        r, sv = float(cr[i, j]), float(cs[i, j])
        if np.isnan(r):
            continue
        d = abs(r - (0.0 if np.isnan(sv) else sv))
        delta[f"{ca}|{cb}"] = round(d, 4)
        if abs(r) >= STRONG and d > LOST_CHANGE:
            lost.append(f"{ca}|{cb}")
    return Comparison(ks, tv, delta, lost)


def tstr(train_real: pd.DataFrame, syn: pd.DataFrame, test_real: pd.DataFrame,
         target: str) -> dict[str, Any]:
    """Train a simple model on the synthetic rows and on the real training rows; score both
    on the real held-out rows (R² for a numeric target, accuracy for a categorical one)."""
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = [c for c in _numeric(train_real, list(train_real.columns)).columns if c != target]
    y_real = train_real[target]
    categorical = not pd.api.types.is_numeric_dtype(y_real) or y_real.nunique() <= 10

    def prepare(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        x = _numeric(frame, features).reindex(columns=features)
        keep = x.notna().all(axis=1) & frame[target].notna()
        return x[keep].to_numpy(), frame[target][keep].to_numpy()

    def fit_score(train: pd.DataFrame) -> float:
        x, y = prepare(train)
        xt, yt = prepare(test_real)
        if categorical:
            if len(set(y.tolist())) < 2:
                return 0.0
            model: Any = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        else:
            model = make_pipeline(StandardScaler(), LinearRegression())
        model.fit(x, y.astype(str) if categorical else y)
        return float(model.score(xt, yt.astype(str) if categorical else yt))

    real_score, syn_score = fit_score(train_real), fit_score(syn)
    return {"metric": "accuracy" if categorical else "r2",
            "train_real": round(real_score, 4), "train_synthetic": round(syn_score, 4),
            "ratio": round(syn_score / real_score, 4) if real_score > 0 else 0.0}
