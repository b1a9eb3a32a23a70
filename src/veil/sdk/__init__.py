"""What a notebook imports: `load`, `publish`, `connect` and `dp`.

The same code runs in both stages. In the Programming Stage (Jupyter) `load`
fetches a privacy-enhanced view over the API and `publish` only validates; in
the secure stage (`VEIL_STAGE=secure`, set by the sandbox) `load` reads the
full data mounted for the job and `publish` declares an output for the release
gate. Only published outputs ever leave the secure stage.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from typing import Any

from veil.sdk.client import ApiError, Client
from veil.sdk.outputs import PublishError, publish
from veil.stage import ENV_STAGE, PREFLIGHT, SECURE

_client: Client | None = None


def stage() -> str:
    """"secure" inside the sandbox, "programming" everywhere else.

    A pre-flight run is "secure" too: it must behave as the job will (queries are plans that
    trusted code evaluates afterwards), only on stage-1 views instead of the full data.
    """
    return "secure" if os.environ.get(ENV_STAGE) in (SECURE, PREFLIGHT) else "programming"


def connect(url: str | None = None, token: str | None = None) -> Client:
    """Point the SDK at a server (defaults: $VEIL_URL and $VEIL_TOKEN)."""
    global _client
    _client = Client(url, token)
    return _client


def load(name: str, *, view: str | None = None) -> Any:
    """The dataset `owner/name` as a pandas DataFrame.

    Programming Stage: the best stage-1 view the provider offers (synthetic,
    sample or mock; `view=` picks one). Secure stage: the full data. Pre-flight (the sandbox
    run of ``veil job preflight``): the caller's stage-1 view, staged by the server.
    `df.attrs["veil_view"]` says which one you got; for a DP synthetic view,
    `df.attrs["veil_fidelity"]` is its DP-safe summary (epsilon, delta, method, the column
    pairs the model kept), computed from the DP model only.
    """
    import io

    import pandas as pd

    from veil.sdk.dp import register_load

    if os.environ.get(ENV_STAGE) == PREFLIGHT:
        from veil.sdk.secure import load_preflight_view

        frame = load_preflight_view(name)
        register_load(name, frame, None)
        return frame
    if stage() == "secure":
        from veil.sdk.secure import load_input

        frame = load_input(name)
        register_load(name, frame, None)
        return frame
    client = _client or connect()
    kind, data = client.view(name, view)
    frame = pd.read_parquet(io.BytesIO(data))
    frame.attrs["veil_view"] = kind
    info = client.dataset(name)
    summary = (info.get("view_info", {}).get(kind) or {}).get("dp")
    if summary is not None:
        frame.attrs["veil_fidelity"] = summary
    register_load(name, frame, info.get("rules") or {})
    _warn_unjoinable(client, name, frame, info)
    return frame


_ID_LIKE = re.compile(r"(^|_)(id|key)$", re.IGNORECASE)


def _warn_unjoinable(client: Client, name: str, frame: Any, info: dict[str, Any]) -> None:
    """Warn when a join on this view's id columns could not mean anything in stage 1.

    A join key the provider declared holds view keys that match other providers' views; any
    other id column in a mock or synthetic view is random or empty, so a join on it gives no
    rows (or a null-by-null blow-up) without saying so.
    """
    declared = set(info.get("join_keys") or [])
    for column in declared & set(frame.columns):
        if frame[column].isna().all():
            warnings.warn(f"{name}: join key column {column!r} is empty in this view; a join "
                          "on it will not match anything", UserWarning, stacklevel=3)
    candidates = {c for c in frame.columns if isinstance(c, str) and _ID_LIKE.search(c)}
    candidates -= declared
    if not candidates:
        return
    try:
        others = [d for d in client.datasets() if d.get("name") != name]
    except ApiError:
        return
    for column in sorted(candidates):
        shared = sorted(d["name"] for d in others
                        if column in _column_names(d.get("schema")))
        if shared:
            warnings.warn(
                f"{name}: column {column!r} is not a declared join key of this dataset: its "
                f"values in the {frame.attrs.get('veil_view', 'stage-1')} view are not joinable "
                f"keys, so a join with {', '.join(shared)} on it is meaningless in stage 1 "
                "(the provider can list it in the policy's join_keys)",
                UserWarning, stacklevel=3)


def _column_names(schema: Any) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    return {c["name"] for c in schema.get("columns") or [] if isinstance(c, dict) and "name" in c}


def aggregate(data: Any, by: Any, **aggregates: Any) -> Any:
    """A thresholded group-by table computed by the release executor (see ``veil.sdk.dp``)."""
    from veil.sdk.dp import aggregate as declare

    return declare(data, by, **aggregates)


def __getattr__(name: str) -> Any:
    if name == "dp":
        return importlib.import_module("veil.sdk.dp")
    raise AttributeError(name)


__all__ = ["ApiError", "Client", "PublishError", "aggregate", "connect", "load", "publish",
           "stage"]
