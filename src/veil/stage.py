"""The secure stage's contract, in one place (Starlette's ``types.py`` habit).

Everything the host side (worker, sandbox backends, release executor) and the in-sandbox side
(the SDK) must agree on: environment variable names, mount points, and the typed input index
the worker writes for a run. Imports nothing of Veil, so every part may use it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ENV_INPUTS",
    "ENV_JOB_ID",
    "ENV_KEY_AGENT",
    "ENV_OUTPUTS",
    "ENV_STAGE",
    "INPUTS_MOUNT",
    "INPUT_INDEX",
    "OUTPUTS_MOUNT",
    "PREFLIGHT",
    "PREFLIGHT_INDEX",
    "SECURE",
    "IndexEntry",
    "InputIndex",
    "InputIndexError",
    "PreflightIndex",
    "PreflightView",
]

ENV_STAGE = "VEIL_STAGE"  # "secure" inside the sandbox; anything else is the Programming Stage
SECURE = "secure"
# A pre-flight run: the approved-to-be bundle in the same sandbox, on stage-1 views staged as
# plain Parquet under the inputs mount (see ``PreflightIndex``); nothing it writes is released.
PREFLIGHT = "preflight"
PREFLIGHT_INDEX = "preflight.json"
ENV_INPUTS = "VEIL_INPUTS"
ENV_OUTPUTS = "VEIL_OUTPUTS"
ENV_KEY_AGENT = "VEIL_KEY_AGENT"
ENV_JOB_ID = "VEIL_JOB_ID"
INPUTS_MOUNT = "/inputs"
OUTPUTS_MOUNT = "/outputs"
INPUT_INDEX = "inputs.json"
_MAX_INDEX_BYTES = 1024 * 1024


class InputIndexError(ValueError):
    """The input index is missing or malformed: the run cannot find its inputs."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class IndexEntry(_Frozen):
    """One input: its dataset id, the ciphertext's file name, the envelope's context."""

    id: str = Field(min_length=1, max_length=64)
    file: str = Field(min_length=1, max_length=200)
    context: str = Field(min_length=1, max_length=200)

    @field_validator("file")
    @classmethod
    def _inside(cls, value: str) -> str:
        if "/" in value or value.startswith(".") or "\0" in value:
            raise ValueError("an input file must be a plain name inside the inputs folder")
        return value


class InputIndex(_Frozen):
    """What the worker writes as ``inputs.json``: the job, its approved digest, its inputs."""

    job: str = Field(min_length=1, max_length=64)
    bundle_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    datasets: dict[str, IndexEntry]

    def write(self, folder: Path) -> None:
        (folder / INPUT_INDEX).write_text(self.model_dump_json())

    @classmethod
    def read(cls, folder: Path) -> InputIndex:
        path = folder / INPUT_INDEX
        try:
            data = path.read_bytes()
        except OSError:
            raise InputIndexError(f"the secure stage has no readable {INPUT_INDEX}") from None
        if len(data) > _MAX_INDEX_BYTES:
            raise InputIndexError(f"{INPUT_INDEX} is too large")
        try:
            return cls.model_validate(json.loads(data))
        except (ValueError, ValidationError):
            raise InputIndexError(f"{INPUT_INDEX} is malformed") from None


class PreflightView(_Frozen):
    """One stage-1 view staged for a pre-flight run, with the public rules stage 1 uses."""

    file: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=32)
    rules: dict[str, object]

    @field_validator("file")
    @classmethod
    def _inside(cls, value: str) -> str:
        if "/" in value or value.startswith(".") or "\0" in value:
            raise ValueError("a view file must be a plain name inside the inputs folder")
        return value


class PreflightIndex(_Frozen):
    """What the host writes as ``preflight.json``: dataset name -> its staged view."""

    datasets: dict[str, PreflightView]

    def write(self, folder: Path) -> None:
        (folder / PREFLIGHT_INDEX).write_text(self.model_dump_json())

    @classmethod
    def read(cls, folder: Path) -> PreflightIndex:
        path = folder / PREFLIGHT_INDEX
        try:
            data = path.read_bytes()
        except OSError:
            raise InputIndexError(f"the pre-flight run has no readable {PREFLIGHT_INDEX}") from None
        if len(data) > _MAX_INDEX_BYTES:
            raise InputIndexError(f"{PREFLIGHT_INDEX} is too large")
        try:
            return cls.model_validate(json.loads(data), strict=False)
        except (ValueError, ValidationError):
            raise InputIndexError(f"{PREFLIGHT_INDEX} is malformed") from None
