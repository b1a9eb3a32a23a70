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

_client: Client | None = None


def stage() -> str:
    """"secure" inside the sandbox, "programming" everywhere else."""
    return "secure" if os.environ.get("VEIL_STAGE") == "secure" else "programming"


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

    if stage() == "secure":
        from veil.sdk.secure import load_input

        return load_input(name)
    client = _client or connect()
    kind, data = client.view(name, view)
    frame = pd.read_parquet(io.BytesIO(data))
    frame.attrs["veil_view"] = kind
    return frame


def __getattr__(name: str) -> Any:
    if name == "dp":
        return importlib.import_module("veil.sdk.dp")
    raise AttributeError(name)


__all__ = ["ApiError", "Client", "PublishError", "connect", "load", "publish", "stage"]
