"""`veil.publish`: declare an output of the analysis.

Inside the secure stage the value is serialised into the outputs folder and
recorded in the manifest the release gate reads. In the Programming Stage it
is serialised in memory (so a notebook fails early on an unpublishable value)
and written only if the researcher sets $VEIL_OUTPUTS to a local folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from veil.release.manifest import (
    EXTENSIONS,
    OutputEntry,
    OutputKind,
    OutputManifest,
    read_manifest,
    write_manifest,
)
from veil.stage import ENV_OUTPUTS, ENV_STAGE, OUTPUTS_MOUNT, SECURE


class PublishError(ValueError):
    pass


def publish(name: str, value: Any, *, count_column: str | None = None,
            trained_on: Any = None, features: list[str] | None = None,
            label: str | None = None) -> Any:
    """Declare `value` as output `name`.

    A query from ``veil.dp`` or ``veil.aggregate`` is published as its plan: the release
    executor evaluates it on the full data after the run, and its result can leave
    automatically (DP: charged to the budget; aggregate: small groups dropped or refused;
    DP training: the DP model, charged). Anything the notebook computed itself — DataFrames,
    scalars, dicts, figures, models — always waits for review by every provider; `count_column`
    names a table's group-size column so the reviewer sees the smallest group, nothing more.

    A model (a fitted scikit-learn estimator, written with skops; numpy arrays, as ``.npz``;
    never pickle) may say what it was trained on — ``trained_on`` (what ``veil.load``
    returned, or a ``veil.dp.table(...)`` relation with filters), ``features`` and ``label``
    — so that the executor, which has the full data, rebuilds those rows and audits the model
    for membership inference before a reviewer sees it.
    """
    kind, payload, meta = _serialise(value, count_column)
    if kind == "model":
        meta = {**meta, **_training_data(value, trained_on, features, label)}
    elif trained_on is not None or features is not None or label is not None:
        raise PublishError("trained_on, features and label apply to models only")
    suffix = meta["format"] if kind == "model" else EXTENSIONS[kind]
    entry = OutputEntry(name=name, kind=kind, file=f"{name}.{suffix}",
                        sha256=hashlib.sha256(payload).hexdigest(), size=len(payload), meta=meta)
    folder = os.environ.get(ENV_OUTPUTS)
    if folder is None and os.environ.get(ENV_STAGE) == SECURE:
        folder = OUTPUTS_MOUNT
    if folder is None:
        return value
    outputs = Path(folder)
    manifest = read_manifest(outputs)
    if any(entry.name == name for entry in manifest.outputs):
        raise PublishError(f"output {name!r} is already published")
    (outputs / entry.file).write_bytes(payload)
    preview = _preview(value)
    if preview is not None:  # stage 1 only: the query's result on the views, for the researcher
        suffix, data = preview
        (outputs / f"{name}.view.{suffix}").write_bytes(data)
        entry = entry.model_copy(update={"meta": {**entry.meta, "view_file":
                                                  f"{name}.view.{suffix}"}})
    write_manifest(outputs, OutputManifest(outputs=[*manifest.outputs, entry]))
    return value


def collect_plans(outputs_dir: Path) -> dict[str, Any]:
    """The plans a stage-1 run published into ``outputs_dir`` ($VEIL_OUTPUTS), by output name.

    Pin them at submission (``Client.submit(..., plans=...)``, ``veil job submit --plans``):
    a plan fixed before the secure run is what lets its result leave without review.
    """
    from veil.privacy.plans import parse_plan

    return {entry.name: parse_plan((outputs_dir / entry.file).read_bytes())
            for entry in read_manifest(outputs_dir).outputs if entry.kind == "plan"}


def _training_data(model: Any, trained_on: Any, features: list[str] | None,
                   label: str | None) -> dict[str, Any]:
    """The declaration the executor audits the model with (it trusts only its own rebuild)."""
    if trained_on is None:
        if features is not None or label is not None:
            raise PublishError("features and label need trained_on")
        return {}
    from veil.sdk.dp import table

    names = getattr(model, "feature_names_in_", None)
    chosen = list(features) if features is not None else (
        None if names is None else [str(n) for n in names])
    if not chosen or label is None:
        raise PublishError("an audited model needs its features (or feature_names_in_) and "
                           "its label column")
    return {"trained_on": table(trained_on).model_dump(mode="json"), "features": chosen,
            "label": label}


def _preview(value: Any) -> tuple[str, bytes] | None:
    from veil.privacy.dpsgd import SGDModel
    from veil.privacy.mechanisms import DPResult
    from veil.privacy.training import DPModel
    from veil.sdk.dp import Query

    if not isinstance(value, Query) or value.result is None:
        return None
    if isinstance(value.result, SGDModel):  # the view's curve is the researcher's, not a release
        return "json", json.dumps({**value.result.to_json(), "view_losses":
                                   value.result.view_losses, "view_accuracy":
                                   value.result.view_accuracy}).encode()
    if isinstance(value.result, DPResult | DPModel):
        return "json", json.dumps(value.result.to_json()).encode()
    buf = io.BytesIO()
    value.result.table.to_parquet(buf, index=False)
    return "parquet", buf.getvalue()


def _serialise(value: Any,
               count_column: str | None) -> tuple[OutputKind, bytes, dict[str, Any]]:
    import pandas as pd

    from veil.privacy.mechanisms import DPResult
    from veil.sdk.dp import Query

    if isinstance(value, Query):
        if count_column is not None:
            raise PublishError("count_column applies to DataFrames only")
        return "plan", value.plan.to_bytes(), {"plan": value.plan.query.kind}
    if isinstance(value, DPResult):
        raise PublishError("a DP value computed in the notebook cannot leave as DP: publish "
                           "the query itself (veil.dp.mean(df, ...)), which the release "
                           "executor evaluates")
    if isinstance(value, pd.DataFrame):
        if count_column is not None and count_column not in value.columns:
            raise PublishError(f"count_column {count_column!r} is not a column of the table")
        buf = io.BytesIO()
        value.to_parquet(buf, index=False)
        meta: dict[str, Any] = {"rows": len(value), "columns": [str(c) for c in value.columns]}
        if count_column is not None:
            meta["count_column"] = count_column
        return "table", buf.getvalue(), meta
    if count_column is not None:
        raise PublishError("count_column applies to DataFrames only")
    model = _model(value)
    if model is not None:
        return model
    if _is_figure(value):
        buf = io.BytesIO()
        value.savefig(buf, format="png")
        return "figure", buf.getvalue(), {}
    if isinstance(value, dict):
        try:
            return "dict", json.dumps(value, allow_nan=False, default=_scalar).encode(), {}
        except (TypeError, ValueError) as exc:
            raise PublishError(f"dict output is not JSON-serialisable: {exc}") from None
    scalar = _scalar(value)
    return "scalar", json.dumps({"value": scalar}, allow_nan=False).encode(), {}


def _model(value: Any) -> tuple[OutputKind, bytes, dict[str, Any]] | None:
    """A scikit-learn estimator (skops) or numpy arrays (npz); None if ``value`` is neither."""
    import numpy as np

    from veil.privacy.model_io import ModelFormatError, describe, dump_model

    is_arrays = isinstance(value, np.ndarray) or (isinstance(value, dict) and bool(value) and all(
        isinstance(v, np.ndarray) for v in value.values()))
    if not is_arrays and not type(value).__module__.startswith("sklearn."):
        return None
    try:
        fmt, data = dump_model(value)
    except ModelFormatError as exc:
        raise PublishError(str(exc)) from None
    loaded = value if fmt == "skops" else {"array": value} if isinstance(value, np.ndarray) \
        else value
    return "model", data, describe(loaded, fmt, len(data)).meta()


def _scalar(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PublishError("non-finite numbers cannot be published")
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _scalar(item())
    raise PublishError(f"cannot publish a value of type {type(value).__name__}")


def _is_figure(value: Any) -> bool:
    return type(value).__name__ == "Figure" and callable(getattr(value, "savefig", None))
