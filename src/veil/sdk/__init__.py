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
from typing import Any

from veil.sdk.client import ApiError, Client
from veil.sdk.outputs import PublishError, publish
from veil.stage import ENV_STAGE, SECURE

_client: Client | None = None


def stage() -> str:
    """"secure" inside the sandbox, "programming" everywhere else."""
    return "secure" if os.environ.get(ENV_STAGE) == SECURE else "programming"


def connect(url: str | None = None, token: str | None = None) -> Client:
    """Point the SDK at a server (defaults: $VEIL_URL and $VEIL_TOKEN)."""
    global _client
    _client = Client(url, token)
    return _client


def load(name: str, *, view: str | None = None) -> Any:
    """The dataset `owner/name` as a pandas DataFrame.

    Programming Stage: the best stage-1 view the provider offers (synthetic,
    sample or mock; `view=` picks one). Secure stage: the full data.
    `df.attrs["veil_view"]` says which one you got.
    """
    import io

    import pandas as pd

    from veil.sdk.dp import register_load

    if stage() == "secure":
        from veil.sdk.secure import load_input

        frame = load_input(name)
        register_load(name, frame, None)
        return frame
    client = _client or connect()
    kind, data = client.view(name, view)
    frame = pd.read_parquet(io.BytesIO(data))
    frame.attrs["veil_view"] = kind
    register_load(name, frame, client.dataset(name).get("rules") or {})
    return frame


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
