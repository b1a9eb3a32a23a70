"""The SDK's secure-stage side: fetch a dataset's key through attestation, then decrypt.

The worker mounts only ciphertext. ``load_input`` asks the job's key agent for a broker
nonce, binds it and a fresh X25519 key into the launch evidence, and opens the data key the
broker sealed to that key; without a successful attestation there is nothing to decrypt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from veil.stage import (
    ENV_INPUTS,
    ENV_KEY_AGENT,
    INPUTS_MOUNT,
    InputIndex,
    InputIndexError,
    PreflightIndex,
)


class InputNotDeclared(LookupError):
    pass


class SecureInputError(RuntimeError):
    """The secure stage's input index or key agent is missing or malformed."""


def load_input(name: str) -> Any:
    from veil.catalog.ingest import load_frame
    from veil.crypto.envelope import DataKey
    from veil.tee.agent import fetch_dataset_key

    inputs = Path(os.environ.get(ENV_INPUTS, INPUTS_MOUNT))
    try:
        index = InputIndex.read(inputs)
    except InputIndexError as exc:
        raise SecureInputError(str(exc)) from None
    entry = index.datasets.get(name)
    if entry is None:
        raise InputNotDeclared(f"dataset {name!r} is not an input of this job")
    agent = os.environ.get(ENV_KEY_AGENT)
    if not agent:
        raise SecureInputError(f"no key agent in this secure stage ({ENV_KEY_AGENT} unset)")
    key = fetch_dataset_key(agent, dataset_id=entry.id, job=index.job,
                            bundle_digest=index.bundle_digest)
    frame = load_frame(inputs / entry.file, DataKey.from_bytes(key),
                       context=entry.context.encode())
    frame.attrs["veil_view"] = "full"
    return frame


def load_preflight_view(name: str) -> Any:
    """A pre-flight run's input: the stage-1 view the server staged for the caller."""
    import pandas as pd

    inputs = Path(os.environ.get(ENV_INPUTS, INPUTS_MOUNT))
    try:
        index = PreflightIndex.read(inputs)
    except InputIndexError as exc:
        raise SecureInputError(str(exc)) from None
    entry = index.datasets.get(name)
    if entry is None:
        raise InputNotDeclared(f"dataset {name!r} is not an input of this job")
    frame = pd.read_parquet(inputs / entry.file)
    frame.attrs["veil_view"] = entry.kind
    return frame
