"""The SDK's secure-stage side: fetch a dataset's key through attestation, then decrypt.

The worker mounts only ciphertext. ``load_input`` asks the job's key agent for a broker
nonce, binds it and a fresh X25519 key into the launch evidence, and opens the data key the
broker sealed to that key; without a successful attestation there is nothing to decrypt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class InputNotDeclared(LookupError):
    pass


class SecureInputError(RuntimeError):
    """The secure stage's input index or key agent is missing or malformed."""


def _index(inputs: Path) -> dict[str, Any]:
    try:
        index = json.loads((inputs / "inputs.json").read_text())
    except (OSError, ValueError):
        raise SecureInputError("the secure stage has no readable inputs.json") from None
    if not isinstance(index, dict) or not isinstance(index.get("datasets"), dict):
        raise SecureInputError("inputs.json is malformed")
    return index


def load_input(name: str) -> Any:
    from veil.catalog.ingest import load_frame
    from veil.crypto.envelope import DataKey
    from veil.tee.agent import fetch_dataset_key

    inputs = Path(os.environ.get("VEIL_INPUTS", "/inputs"))
    index = _index(inputs)
    entry = index["datasets"].get(name)
    if entry is None:
        raise InputNotDeclared(f"dataset {name!r} is not an input of this job")
    agent = os.environ.get("VEIL_KEY_AGENT")
    if not agent:
        raise SecureInputError("no key agent in this secure stage (VEIL_KEY_AGENT unset)")
    try:
        file_name, dataset_id, context = entry["file"], entry["id"], entry["context"]
        job, bundle_digest = str(index["job"]), str(index["bundle_digest"])
    except (KeyError, TypeError):
        raise SecureInputError("inputs.json entry is malformed") from None
    if "/" in file_name or file_name.startswith("."):
        raise SecureInputError("inputs.json names a file outside the inputs folder")
    key = fetch_dataset_key(agent, dataset_id=str(dataset_id), job=job,
                            bundle_digest=bundle_digest)
    frame = load_frame(inputs / file_name, DataKey.from_bytes(key), context=str(context).encode())
    frame.attrs["veil_view"] = "full"
    return frame
