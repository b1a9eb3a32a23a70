"""DP model training the workload cannot fake: noisy full-batch gradient descent in OpenDP.

A :class:`~veil.privacy.plans.TrainQuery` is evaluated here, by the release executor on the
full data (and in stage 1 on the views). Every privacy-relevant step is an OpenDP
transformation or measurement, composed by OpenDP's accountant:

* rows are clamped to the plan's public bounds and scaled to [-1, 1] (row-wise, so one
  privacy unit still moves at most ``d_in`` rows: see ``plans.prepare``);
* a DP row count (``make_np_count`` then the discrete Gaussian) sets the step size;
* each step maps every row to its loss gradient at the current, already released, weights
  (``make_user_transformation``, row-wise: 1-stable), clips each row to L2 norm ``clip``
  (``make_np_clamp``), sums the rows (``make_np_sum``) and adds Gaussian noise
  (``make_gaussian``);
* ``make_adaptive_composition`` under zero-concentrated DP composes the count and the steps
  (later steps depend on earlier releases: adaptive), ``make_zCDP_to_approxDP`` and
  ``make_fix_delta`` turn it into (epsilon, delta).

Group privacy is exact, not a generic k-fold blow-up: the composition is mapped at
``d_in`` = the relation's contribution bound. One unit moves at most ``d_in`` rows, each
gradient row is clipped to ``clip``, so the sum moves by at most ``d_in * clip`` in L2 and the
Gaussian's zCDP cost is ``(d_in * clip)**2 / (2 * scale**2)`` per step — OpenDP's own map.
The noise scale is calibrated to the plan's (epsilon, delta) by the same map, so the cost the
gate charges is what the library says about the measurement that ran. No subsampling: full
batches avoid trusting a sampler for privacy amplification. OpenDP's ``LinearRegression``
(Theil-Sen) fits one feature only, so linear regression uses the same loop with squared loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd

from veil.privacy._opendp import dp, features
from veil.privacy.errors import InvalidParameterError
from veil.privacy.plans import PlanError, SourceRules, TrainQuery, prepare

__all__ = ["DP_MODEL_FORMAT", "DPModel", "parse_dp_model", "train", "verify_model_cost"]

DP_MODEL_FORMAT = "veil-dp-model/1"
_FEATURES = ("honest-but-curious", "idealized-numerics")
# The count's noise scale is _COUNT_SCALE * scale / clip: it costs a quarter of one step.
_COUNT_SCALE = 2.0


@dataclass(frozen=True)
class DPModel:
    """A DP-trained linear model in the data's own units, with the cost OpenDP mapped."""

    model: str
    features: list[str]
    label: str
    coef: list[float]
    intercept: float
    epsilon: float
    delta: float
    params: dict[str, Any] = field(default_factory=dict)
    # Stage 1 only: the model's score on the view it was trained on (never on the full data).
    view_score: float | None = None

    def to_json(self) -> dict[str, Any]:
        """What the executor writes (kind ``dp_model``): no pickle, re-verifiable cost."""
        return {"format": DP_MODEL_FORMAT, "model": self.model, "features": self.features,
                "label": self.label, "coef": self.coef, "intercept": self.intercept,
                "epsilon": self.epsilon, "delta": self.delta, "params": self.params,
                "accountant": {"library": f"opendp {version('opendp')}",
                               "measure": "zCDP, adaptive composition",
                    "conversion": "make_zCDP_to_approxDP, make_fix_delta",
                    "d_in": self.params.get("d_in")}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DPModel:
        """Parse AND re-derive the cost from the parameters (fails closed, like DPResult)."""
        if doc.get("format") != DP_MODEL_FORMAT:
            raise InvalidParameterError("not a Veil DP model")
        epsilon, delta = verify_model_cost(doc)
        coef = [float(c) for c in doc["coef"]]
        names = [str(f) for f in doc["features"]]
        if len(coef) != len(names) or not all(math.isfinite(c) for c in coef):
            raise InvalidParameterError("DP model coefficients do not match its features")
        return cls(str(doc["model"]), names, str(doc["label"]), coef, float(doc["intercept"]),
                   epsilon, delta, dict(doc["params"]))

    def decision(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=float) @ np.asarray(self.coef) + self.intercept

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = self.decision(x)
        return (raw > 0).astype(int) if self.model == "logistic_regression" else raw

    def to_sklearn(self) -> Any:
        """The same model as a fitted scikit-learn estimator (post-processing: no cost)."""
        from sklearn.linear_model import LinearRegression, LogisticRegression

        est: Any = (LogisticRegression() if self.model == "logistic_regression"
                    else LinearRegression())
        est.coef_ = np.asarray([self.coef] if self.model == "logistic_regression"
                               else self.coef, dtype=float)
        est.intercept_ = (np.asarray([self.intercept]) if self.model == "logistic_regression"
                          else float(self.intercept))
        if self.model == "logistic_regression":
            est.classes_ = np.array([0, 1])
        est.n_features_in_ = len(self.features)
        est.feature_names_in_ = np.asarray(self.features, dtype=object)
        return est

    def __repr__(self) -> str:
        score = ("" if self.view_score is None else
                 f", {'accuracy' if self.model == 'logistic_regression' else 'R2'} on the "
                 f"view {self.view_score:.3f}")
        return (f"DPModel({self.model} on {len(self.features)} features{score}, "
                f"cost=(epsilon={self.epsilon:.6g}, delta={self.delta:.3g}))")


def parse_dp_model(doc: Mapping[str, Any]) -> Any:
    """A ``dp_model`` output by its format: OpenDP's linear model or a DP-SGD model; each
    parser re-derives the cost from the parameters (the gate's check)."""
    from veil.privacy.dpsgd import SGD_MODEL_FORMAT, SGDModel

    if isinstance(doc, Mapping) and doc.get("format") == SGD_MODEL_FORMAT:
        return SGDModel.from_json(doc)
    return DPModel.from_json(doc)


# --------------------------------------------------------------------------- measurements


def _space(n_cols: int) -> tuple[Any, Any]:
    return dp.numpy.array2_domain(num_columns=n_cols, T=float, nan=False), \
        dp.symmetric_distance()


def _count(n_cols: int, scale: float) -> Any:
    from opendp.extras.numpy._make_np_count import make_np_count

    domain, metric = _space(n_cols)
    return make_np_count(domain, metric) >> dp.m.then_gaussian(scale)


def _step(n_cols: int, model: str, w: np.ndarray, clip: float, scale: float) -> Any:
    """Gradient rows at ``w`` (row-wise, 1-stable) >> clip >> sum >> Gaussian noise."""
    from opendp.extras.numpy._make_np_sum import then_np_sum

    domain, metric = _space(n_cols)
    p = n_cols - 1

    def gradients(rows: np.ndarray) -> np.ndarray:
        z = np.column_stack([rows[:, :p], np.ones(len(rows))])
        raw = z @ w
        fitted = 1.0 / (1.0 + np.exp(-raw)) if model == "logistic_regression" else raw
        return np.nan_to_num((fitted - rows[:, p])[:, None] * z)

    grad = dp.t.make_user_transformation(domain, metric, _space(n_cols)[0], metric,
                                         gradients, lambda d_in: d_in)
    return grad >> dp.numpy.then_np_clamp(norm=clip, p=2) >> then_np_sum() \
        >> dp.m.then_gaussian(scale)


def _composition(n_cols: int, model: str, steps: int, clip: float, scale: float,
                 d_in: int) -> tuple[Any, Any, list[float]]:
    """The adaptive zCDP composition of one count and ``steps`` gradient steps at ``d_in``."""
    count = _count(n_cols, _COUNT_SCALE * scale / clip)
    step = _step(n_cols, model, np.zeros(n_cols), clip, scale)
    d_mids = [float(count.map(d_in)), *[float(step.map(d_in))] * steps]
    domain, metric = _space(n_cols)
    comp = dp.c.make_adaptive_composition(domain, metric, dp.zero_concentrated_divergence(),
                                          d_in=d_in, d_mids=d_mids)
    return comp, count, d_mids


def _approx(comp: Any, delta: float) -> Any:
    return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(comp), delta)


def _cost(n_cols: int, model: str, steps: int, clip: float, scale: float, d_in: int,
          delta: float) -> tuple[float, float]:
    comp, _, _ = _composition(n_cols, model, steps, clip, scale, d_in)
    eps, dlt = _approx(comp, delta).map(d_in)
    return float(eps), float(dlt)


def calibrate(n_cols: int, model: str, steps: int, clip: float, d_in: int, epsilon: float,
              delta: float) -> float:
    """The smallest step noise scale whose mapped (epsilon, delta) fits the plan's.

    zCDP costs add up: find rho for (epsilon, delta) on one Gaussian, solve the scale in closed
    form, then let the real composition's map have the last word (binary search if needed).
    """
    with features(*_FEATURES):
        one = lambda s: _approx(dp.m.make_gaussian(  # noqa: E731
            dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), s), delta)
        s1 = float(dp.binary_search_param(one, d_in=1.0, d_out=(epsilon, delta), T=float))
        rho = 1.0 / (2 * s1 * s1)
        per_unit = steps + 1.0 / _COUNT_SCALE**2  # in units of one step's rho
        guess = d_in * clip * math.sqrt(per_unit / (2 * rho))
        for g in (guess, guess * (1 + 1e-9), guess * (1 + 1e-6)):
            if _cost(n_cols, model, steps, clip, g, d_in, delta)[0] <= epsilon:
                return g
        return float(dp.binary_search_param(
            lambda s: _approx(_composition(n_cols, model, steps, clip, s, d_in)[0], delta),
            d_in=d_in, d_out=(epsilon, delta), T=float))


def verify_model_cost(doc: Mapping[str, Any]) -> tuple[float, float]:
    """Rebuild the composition from a DP model's parameters and map it (no data touched)."""
    try:
        p = doc["params"]
        with features(*_FEATURES):
            eps, dlt = _cost(int(p["n_features"]) + 1, str(doc["model"]), int(p["steps"]),
                             float(p["clip"]), float(p["noise_scale"]), int(p["d_in"]),
                             float(doc["delta"]))
    except (KeyError, TypeError, ValueError, dp.OpenDPException) as exc:
        raise InvalidParameterError(f"DP model parameters are invalid ({type(exc).__name__})") \
            from None
    if abs(eps - float(doc["epsilon"])) > 1e-9 * max(1.0, eps) or dlt != float(doc["delta"]):
        raise InvalidParameterError("the DP model's declared cost differs from OpenDP's map")
    return eps, dlt


# --------------------------------------------------------------------------- training


def design(query: TrainQuery, frame: pd.DataFrame) -> np.ndarray:
    """Rows [features..., label] clamped to the public bounds and scaled to [-1, 1].

    Rows with a missing value (or, for logistic regression, a label other than 0/1) are
    dropped: a row-wise filter, which keeps the contribution bound.
    """
    for column in [*query.features, query.label]:
        if column not in frame.columns:
            raise PlanError(f"unknown column {column!r}")
        series = frame[column]
        if not pd.api.types.is_numeric_dtype(series):
            raise PlanError(f"column {column!r} is not numeric")
    values = frame[[*query.features, query.label]].to_numpy(dtype=float, na_value=np.nan)
    keep = np.isfinite(values).all(axis=1)
    if query.model == "logistic_regression":
        keep &= np.isin(values[:, -1], (0.0, 1.0))
    values = values[keep]
    out = np.empty_like(values)
    for j, column in enumerate(query.features):
        out[:, j] = _scale(values[:, j], query.bounds[column])
    out[:, -1] = (_scale(values[:, -1], query.bounds[query.label])
                  if query.model == "linear_regression" else values[:, -1])
    return out


def _scale(x: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    lo, hi = bounds
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    return np.asarray((np.clip(x, lo, hi) - mid) / half, dtype=float)


def train(query: TrainQuery, frames: Mapping[str, pd.DataFrame],
          rules: Mapping[str, SourceRules]) -> DPModel:
    """Train on the prepared relation; cost from OpenDP's map at the relation's ``d_in``."""
    prepared = prepare(query.relation, frames, rules)
    rows = design(query, prepared.frame)
    n_cols, d_in = len(query.features) + 1, prepared.d_in
    scale = calibrate(n_cols, query.model, query.steps, query.clip, d_in, query.epsilon,
                      query.delta)
    with features(*_FEATURES):
        comp, count, d_mids = _composition(n_cols, query.model, query.steps, query.clip,
                                           scale, d_in)
        eps, delta = (float(v) for v in _approx(comp, query.delta).map(d_in))
        session = comp(rows)
        n = max(float(session(count)), 1.0)
        w = np.zeros(n_cols)
        for _ in range(query.steps):
            noisy = np.asarray(session(_step(n_cols, query.model, w, query.clip, scale)))
            w = w - query.learning_rate * noisy / n
    coef, intercept = _unscale(query, w)
    model = DPModel(query.model, list(query.features), query.label, coef, intercept, eps,
                    delta, {"d_in": d_in, "steps": query.steps, "clip": query.clip,
                            "noise_scale": scale, "learning_rate": query.learning_rate,
                            "n_features": len(query.features), "rho": sum(d_mids),
                            "bounds": {k: list(v) for k, v in query.bounds.items()}})
    return model


def _unscale(query: TrainQuery, w: np.ndarray) -> tuple[list[float], float]:
    """Weights on the scaled data as coefficients in the data's units (post-processing)."""
    mids = np.array([sum(query.bounds[f]) / 2 for f in query.features])
    halves = np.array([(query.bounds[f][1] - query.bounds[f][0]) / 2 for f in query.features])
    coef, intercept = w[:-1] / halves, float(w[-1] - np.sum(w[:-1] * mids / halves))
    if query.model == "linear_regression":
        lo, hi = query.bounds[query.label]
        coef, intercept = coef * (hi - lo) / 2, intercept * (hi - lo) / 2 + (lo + hi) / 2
    return [float(c) for c in coef], float(intercept)


def score(model: DPModel, frame: pd.DataFrame) -> float:
    """Accuracy (logistic) or R^2 (linear) on ``frame``; stage 1 shows it on the view."""
    data = frame[[*model.features, model.label]].dropna()
    x, y = data[model.features].to_numpy(dtype=float), data[model.label].to_numpy(dtype=float)
    if not len(y):
        return float("nan")
    if model.model == "logistic_regression":
        return float(np.mean(model.predict(x) == y))
    residual = np.sum((y - model.predict(x)) ** 2)
    total = np.sum((y - y.mean()) ** 2)
    return float(1 - residual / total) if total > 0 else float("nan")
