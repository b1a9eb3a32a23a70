"""``veil.dp`` and ``veil.aggregate``: declare queries; trusted code computes them.

A notebook cannot hand the release gate a DP value or a group count: whatever it computes,
it could have forged. Instead these functions build a *plan* (``veil.privacy.plans``) over
the job's input datasets, and ``veil.publish(name, query)`` declares it. After the notebook
has exited, the release executor — measured runtime code in its own process with its own key
release — evaluates the plan on the full data with OpenDP and writes the result; the budget
is charged from OpenDP's privacy map of that evaluation.

* Stage 1 (Jupyter): the query is evaluated at once on the stage-1 views, so ``q.value``
  shows the code path and the noise you will get.
* Secure stage: nothing is evaluated in the notebook; ``q.value`` raises, the plan is
  written, and the executor's result is what leaves.

DP training (:func:`linear_regression`, :func:`logistic_regression`) is a plan too: the
executor trains on the full data with OpenDP and writes the DP model (kind ``dp_model``); in
stage 1 ``q.value`` is the model trained on the view, with its score there. :func:`train` does
the same for any architecture: its per-example loss is exported with ``jax.export`` and trained
by DP-SGD in trusted code (``veil.privacy.dpsgd``).

Data: pass what ``veil.load`` returned, a dataset name, or a relation built with
:func:`table`, :func:`join`, ``.derive`` (row-wise derived columns) and ``.filter``. A
DataFrame derived in pandas is refused: its stability (how far one person can move it) is
unknown, so no DP cost could be stated.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import pandas as pd

from veil.privacy.dpsgd import SGDModel
from veil.privacy.mechanisms import DPResult
from veil.privacy.plans import (
    AggregateResult,
    DPQuery,
    PlanDocument,
    PlanError,
    Relation,
    SGDQuery,
    SourceRules,
    TrainQuery,
    _build,
    _plain,
    evaluate,
)
from veil.privacy.training import DPModel, score

__all__ = [
    "DPResult",
    "PlanError",
    "Query",
    "Relation",
    "aggregate",
    "count",
    "grouped_count",
    "grouped_sum",
    "histogram",
    "join",
    "linear_regression",
    "logistic_regression",
    "mean",
    "quantile",
    "sum",
    "table",
    "train",
]

# id(frame) -> (weak reference, dataset name): which frames came straight from veil.load.
_LOADED: dict[int, tuple[weakref.ReferenceType[pd.DataFrame], str]] = {}
# dataset name -> (the stage-1 view as loaded, its public rules); stage 1 only.
_VIEWS: dict[str, tuple[pd.DataFrame, SourceRules]] = {}


def register_load(name: str, frame: pd.DataFrame, rules: dict[str, Any] | None) -> None:
    """Called by ``veil.load``: remember that ``frame`` is dataset ``name`` as loaded."""
    key = id(frame)

    def forget(_: object) -> None:
        _LOADED.pop(key, None)

    _LOADED[key] = (weakref.ref(frame, forget), name)
    if rules is not None:  # stage 1: keep a pristine copy to evaluate queries on
        _VIEWS[name] = (frame.copy(), SourceRules.from_public(name, rules))


class Query:
    """A declared query: its plan, and in stage 1 its value on the views."""

    def __init__(self, plan: PlanDocument) -> None:
        self.plan = plan
        self._result: DPResult | AggregateResult | DPModel | SGDModel | None = None
        from veil.sdk import stage

        if stage() != "secure":
            self._result = _evaluate_on_views(plan)

    @property
    def value(self) -> Any:
        """Stage 1: the result on the views. Secure stage: not available to the notebook."""
        if self._result is None:
            raise PlanError("in the secure stage the release executor evaluates this query "
                            "after the notebook exits; the notebook never sees its value")
        if isinstance(self._result, AggregateResult):
            return self._result.table
        if isinstance(self._result, DPModel | SGDModel):
            return self._result
        return self._result.value

    @property
    def result(self) -> DPResult | AggregateResult | DPModel | SGDModel | None:
        return self._result

    def __repr__(self) -> str:
        query = self.plan.query
        if isinstance(query, DPQuery):
            what = (f"{query.measure.mechanism}{_of(query.measure.column)}, epsilon "
                    f"{query.measure.epsilon:g}")
        elif isinstance(query, TrainQuery):
            what = f"{query.model} of {query.label}, epsilon {query.epsilon:g}"
        elif isinstance(query, SGDQuery):
            what = f"DP-SGD of {query.label}, {_sgd_cost(query)}"
        else:
            what = f"aggregate by {', '.join(query.by)}"
        over = " ⋈ ".join(query.relation.sources)
        if self._result is None:
            return f"Query({what} over {over}: evaluated by the release executor)"
        if isinstance(self._result, AggregateResult):
            r = self._result
            return (f"Query({what} over {over} on the views: {len(r.table)} groups kept, "
                    f"{r.dropped} below {r.min_group_size} dropped)")
        return f"Query({what} over {over} on the views: {self._result!r})"  # DP value or model


def _of(column: str | None) -> str:
    return f" of {column}" if column else ""


# --------------------------------------------------------------------------- relations


def table(data: pd.DataFrame | str | Relation) -> Relation:
    """The relation behind ``data``: a frame from ``veil.load``, a dataset name, a relation."""
    if isinstance(data, Relation):
        return data
    if isinstance(data, str):
        return _build(Relation, {"sources": [data]})
    if isinstance(data, pd.DataFrame):
        entry = _LOADED.get(id(data))
        if entry is not None and entry[0]() is data:
            return _build(Relation, {"sources": [entry[1]]})
        raise PlanError(
            "this DataFrame was derived in pandas, so how far one person can change it is "
            "unknown and no DP cost can be stated; query the frame veil.load returned and "
            "express the derivation in the plan: veil.dp.table(df).derive(name, op, *args), "
            ".filter(column, op, value), veil.dp.join(a, b, on=id_column), and the group-by "
            "of grouped_count/aggregate")
    raise PlanError(f"cannot query a {type(data).__name__}; pass what veil.load returned")


def join(left: pd.DataFrame | str | Relation, right: pd.DataFrame | str | Relation, *,
         on: str) -> Relation:
    """Inner join of two input datasets on their shared privacy-id column (see plans)."""
    return table(left).join(table(right), on=on)


def _query(data: Any, **measure: Any) -> Query:
    doc = {"query": {"kind": "dp", "relation": table(data).model_dump(mode="json"),
                     "measure": {k: v for k, v in measure.items() if v is not None}}}
    return Query(_build(PlanDocument, doc))


def _no_keys(keys: object, what: str = "keys") -> None:
    if keys is not None:
        raise PlanError(f"{what} chosen by the notebook are refused: group keys must be "
                        "public, so they come from the providers' policies (categories)")


# --------------------------------------------------------------------------- DP queries


def count(data: Any, *, epsilon: float, column: str | None = None) -> Query:
    """DP row count (or count of non-null ``column``), discrete Laplace."""
    return _query(data, mechanism="count", epsilon=epsilon, column=column)


def sum(data: Any, column: str, *, bounds: tuple[float, float], epsilon: float) -> Query:
    """DP sum of ``column`` clamped to the public ``bounds``."""
    return _query(data, mechanism="sum", epsilon=epsilon, column=column, bounds=bounds)


def mean(data: Any, column: str, *, bounds: tuple[float, float], epsilon: float) -> Query:
    """DP mean: a DP count and a DP clamped sum composed, then divided."""
    return _query(data, mechanism="mean", epsilon=epsilon, column=column, bounds=bounds)


def quantile(data: Any, column: str, q: float, *, bounds: tuple[float, float],
             epsilon: float, n_candidates: int = 101) -> Query:
    """DP q-quantile among evenly spaced candidates of ``bounds`` (exponential mechanism)."""
    return _query(data, mechanism="quantile", epsilon=epsilon, column=column, bounds=bounds,
                  q=q, n_candidates=n_candidates)


def histogram(data: Any, column: str, *, epsilon: float, bins: Sequence[float] | None = None,
              categories: object = None) -> Query:
    """DP counts per public category of ``column`` (from the policy) or per public bin."""
    _no_keys(categories, "categories")
    return _query(data, mechanism="histogram", epsilon=epsilon, column=column,
                  bins=None if bins is None else list(bins))


def grouped_count(data: Any, by: str | Sequence[str], *, epsilon: float,
                  keys: object = None) -> Query:
    """DP count per group; the groups are the public categories the policies declare."""
    _no_keys(keys)
    return _query(data, mechanism="grouped_count", epsilon=epsilon, by=_by(by))


def grouped_sum(data: Any, by: str | Sequence[str], column: str, *,
                bounds: tuple[float, float], epsilon: float, keys: object = None) -> Query:
    """DP sum of ``column`` per public group (see grouped_count)."""
    _no_keys(keys)
    return _query(data, mechanism="grouped_sum", epsilon=epsilon, by=_by(by), column=column,
                  bounds=bounds)


def aggregate(data: Any, by: str | Sequence[str], **aggregates: tuple[str, str] | str) -> Query:
    """A group-by table released when every group has enough people.

    ``veil.aggregate(joined, by="region", patients=("patient_id", "count_distinct"),
    mean_claim=("claim_amount", "mean"), visits="count")``. The executor counts each group's
    privacy units itself and drops or refuses groups below the strictest ``min_group_size``.
    """
    specs: dict[str, dict[str, Any]] = {}
    for name, spec in aggregates.items():
        if spec == "count":
            specs[name] = {"fn": "count"}
        elif isinstance(spec, tuple) and len(spec) == 2:
            specs[name] = {"fn": spec[1], "column": spec[0]}
        else:
            raise PlanError(f"aggregate {name!r} must be 'count' or (column, function)")
    doc = {"query": {"kind": "aggregate", "relation": table(data).model_dump(mode="json"),
                     "by": _by(by), "aggregates": specs}}
    return Query(_build(PlanDocument, doc))


# --------------------------------------------------------------------------- DP training


def linear_regression(data: Any, features: Sequence[str], label: str, *,
                      bounds: dict[str, tuple[float, float]], epsilon: float,
                      delta: float = 1e-7, steps: int = 30, clip: float = 1.0,
                      learning_rate: float = 2.0) -> Query:
    """DP linear regression (noisy gradient descent in OpenDP; see ``privacy.training``).

    ``bounds`` are public and required for every feature and the label: values are clamped to
    them, so choose them without looking at the data.
    """
    return _train(data, "linear_regression", features, label, bounds, epsilon, delta, steps,
                  clip, learning_rate)


def logistic_regression(data: Any, features: Sequence[str], label: str, *,
                        bounds: dict[str, tuple[float, float]], epsilon: float,
                        delta: float = 1e-7, steps: int = 30, clip: float = 1.0,
                        learning_rate: float = 2.0) -> Query:
    """DP logistic regression of a 0/1 ``label``; public ``bounds`` for every feature."""
    return _train(data, "logistic_regression", features, label, bounds, epsilon, delta, steps,
                  clip, learning_rate)


def _train(data: Any, model: str, features: Sequence[str], label: str,
           bounds: dict[str, tuple[float, float]], epsilon: float, delta: float, steps: int,
           clip: float, learning_rate: float) -> Query:
    if isinstance(features, str):
        raise PlanError("features must be a list of column names")
    if not isinstance(bounds, dict):
        raise PlanError("bounds must map each column to its public (lower, upper)")
    doc = {"query": {"kind": "train", "relation": table(data).model_dump(mode="json"),
                     "model": model, "features": list(features), "label": label,
                     "bounds": {str(k): _plain(v) for k, v in bounds.items()},
                     "epsilon": epsilon, "delta": delta, "steps": steps, "clip": clip,
                     "learning_rate": learning_rate}}
    return Query(_build(PlanDocument, doc))


def train(data: Any, *, loss: Any, params: dict[str, Any], features: Sequence[str],
          label: str, bounds: dict[str, tuple[float, float]], sampling_rate: float,
          batch_size: int, epochs: float, clip: float = 1.0, delta: float = 1e-6,
          noise_multiplier: float | None = None, epsilon: float | None = None,
          predict: Any = None, learning_rate: float = 0.01,
          optimizer: str = "adam") -> Query:
    """DP-SGD of a user-defined model (see ``veil.privacy.dpsgd``); returns a Query.

    ``loss(params, x, y) -> scalar`` is the per-example loss of ONE example (``x``:
    float32[len(features)], scaled to [-1, 1] by the public ``bounds``; ``y``: float32), a JAX
    function or its ``jax.export`` serialization (bytes, with ``vjp_order=1``); ``params`` maps
    names to float arrays (the initial parameters). ``sampling_rate`` is public: each privacy
    unit joins each step with this probability (choose it as batch_size / the data's published
    size: the full data's size is private); the noisy gradient sum is divided by
    ``batch_size``. Give ``noise_multiplier`` or a target ``epsilon``. ``predict(params, x)``
    (a logit) lets stage 1 show accuracy on the view. Stage 1: trained on the view at once;
    ``q.value`` is the model with its loss curve and accuracy there, ``repr(q)`` the epsilon
    the plan costs.
    """
    from veil.privacy.dpsgd import dump_params, export_loss, export_predict

    if isinstance(features, str):
        raise PlanError("features must be a list of column names")
    if not isinstance(bounds, dict) or not isinstance(params, dict):
        raise PlanError("bounds must map each column to its public (lower, upper), and params "
                        "each parameter name to an array")
    n = len(features)
    import numpy as np

    init = {str(k): np.asarray(v) for k, v in params.items()}
    doc = {"query": {"kind": "dpsgd", "relation": table(data).model_dump(mode="json"),
                     "features": list(features), "label": label,
                     "bounds": {str(k): _plain(v) for k, v in bounds.items()},
                     "loss": _code(loss, lambda f: export_loss(f, init, n), "loss"),
                     "predict": None if predict is None else _code(
                         predict, lambda f: export_predict(f, init, n), "predict"),
                     "params": _base64(dump_params(init)),
                     "noise_multiplier": noise_multiplier, "epsilon": epsilon, "delta": delta,
                     "clip": clip, "sampling_rate": sampling_rate, "batch_size": batch_size,
                     "epochs": epochs, "learning_rate": learning_rate, "optimizer": optimizer}}
    return Query(_build(PlanDocument, doc))


def _code(fn: Any, export: Any, what: str) -> str:
    """A JAX function, an ``Exported`` or its serialized bytes, as base64 of the bytes."""
    if isinstance(fn, bytes | bytearray):
        return _base64(bytes(fn))
    if hasattr(fn, "serialize") and hasattr(fn, "mlir_module"):  # a jax.export.Exported
        from veil.privacy.dpsgd import canonical

        return _base64(bytes(canonical(fn).serialize(vjp_order=1 if what == "loss" else 0)))
    if callable(fn):
        try:
            return _base64(export(fn))
        except Exception as exc:  # jax refuses: host callbacks, shape errors, ...
            raise PlanError(f"the {what} cannot be exported with jax.export: "
                            f"{type(exc).__name__}: {str(exc)[:300]}") from None
    raise PlanError(f"{what} must be a JAX function or its jax.export serialization")


def _base64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _sgd_cost(query: SGDQuery) -> str:
    from veil.privacy.dpsgd import epsilon_for, steps_for

    try:
        steps = steps_for(query.sampling_rate, query.epochs)
        eps = query.epsilon if query.noise_multiplier is None else epsilon_for(
            query.noise_multiplier, query.sampling_rate, steps, query.delta)
    except PlanError:
        return "cost unknown"
    return f"costs epsilon {eps:.4g} at delta {query.delta:g} over {steps} steps"


def _by(by: str | Sequence[str]) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


# --------------------------------------------------------------------------- stage 1


def _evaluate_on_views(plan: PlanDocument) -> DPResult | AggregateResult | DPModel | SGDModel:
    missing = [s for s in plan.query.relation.sources if s not in _VIEWS]
    if missing:
        import veil.sdk

        for name in missing:
            veil.sdk.load(name)
    frames = {name: _VIEWS[name][0] for name in plan.query.relation.sources}
    rules = {name: _VIEWS[name][1] for name in plan.query.relation.sources}
    if isinstance(plan.query, SGDQuery):
        return _sgd_on_views(plan.query, frames, rules)
    result = evaluate(plan, frames, rules)
    if isinstance(result, DPModel):  # the score on the view: stage 1 only, never in the executor
        from dataclasses import replace

        from veil.privacy.plans import prepare

        view = prepare(plan.query.relation, frames, rules).frame
        result = replace(result, view_score=score(result, view))
    assert isinstance(result, DPResult | AggregateResult | DPModel)
    return result


def _sgd_on_views(query: SGDQuery, frames: dict[str, pd.DataFrame],
                  rules: dict[str, SourceRules]) -> SGDModel:
    """Train on the views with the executor's own code; loss curve and accuracy on the view."""
    from dataclasses import replace

    from veil.privacy.dpsgd import design, train_sgd, view_metrics
    from veil.privacy.plans import prepare

    x, y, _ = design(query, prepare(query.relation, frames, rules).frame)
    losses: list[float] = []
    metrics = view_metrics(query)
    model = train_sgd(query, frames, rules,
                      on_epoch=lambda p: losses.append(metrics(p, x, y)[0]))
    _, accuracy = metrics(model.params, x, y)
    return replace(model, view_losses=losses, view_accuracy=accuracy)


def is_query(value: object) -> bool:
    return isinstance(value, Query)

