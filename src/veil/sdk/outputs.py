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
    MANIFEST_NAME,
    OutputEntry,
    OutputKind,
    OutputManifest,
    read_manifest,
)


class PublishError(ValueError):
    pass


def publish(name: str, value: Any, *, count_column: str | None = None) -> Any:
    """Declare `value` (DataFrame, scalar, dict, matplotlib figure or DP result) as output `name`.

    `count_column` marks a DataFrame as an aggregate table whose named column
    holds each group's size; the release gate checks it against every input's
    minimum group size. Other tables, scalars, dicts and figures wait for
    provider review; DP results are charged to the privacy budget.
    """
    kind, payload, meta = _serialise(value, count_column)
    entry = OutputEntry(name=name, kind=kind, file=f"{name}.{EXTENSIONS[kind]}",
                        sha256=hashlib.sha256(payload).hexdigest(), size=len(payload), meta=meta)
    folder = os.environ.get("VEIL_OUTPUTS")
    if folder is None and os.environ.get("VEIL_STAGE") == "secure":
        folder = "/outputs"
    if folder is None:
        return value
    outputs = Path(folder)
    manifest = read_manifest(outputs)
    if any(entry.name == name for entry in manifest.outputs):
        raise PublishError(f"output {name!r} is already published")
    (outputs / entry.file).write_bytes(payload)
    updated = OutputManifest(outputs=[*manifest.outputs, entry])
    tmp = outputs / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(updated.to_json()))
    tmp.replace(outputs / MANIFEST_NAME)
    return value


def _serialise(value: Any,
               count_column: str | None) -> tuple[OutputKind, bytes, dict[str, Any]]:
    import pandas as pd

    to_json = getattr(value, "to_json", None)
    if type(value).__name__ == "DPResult" and callable(to_json):
        return "dp", json.dumps(to_json()).encode(), {}
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
