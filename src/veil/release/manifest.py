"""The output manifest: the only channel from the secure stage to the world.

The SDK writes it inside the sandbox; the release gate reads it on the host
and trusts nothing in it: names, sizes and hashes are re-checked against the
files, and anything malformed fails the whole job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from veil.names import OUTPUT

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1024 * 1024
# "plan" is what a workload writes for a declared query; "dp", "aggregate" and "dp_model" are
# written only by the release executor, which replaces each plan with its result after the
# workload exits. "model" is a model the workload trained itself (skops or npz): reviewed.
OutputKind = Literal["table", "scalar", "dict", "figure", "plan", "model", "dp", "aggregate",
                     "dp_model"]
WORKLOAD_KINDS: frozenset[str] = frozenset({"table", "scalar", "dict", "figure", "plan",
                                            "model"})
MEDIA_TYPES: dict[str, str] = {
    "table": "application/vnd.apache.parquet",
    "scalar": "application/json",
    "dict": "application/json",
    "figure": "image/png",
    "plan": "application/json",
    "dp": "application/json",
    "aggregate": "application/vnd.apache.parquet",
    "model": "application/octet-stream",  # skops (a zip) or npz; meta["format"] says which
    "dp_model": "application/json",
}
EXTENSIONS: dict[str, str] = {"table": "parquet", "scalar": "json", "dict": "json",
                              "figure": "png", "plan": "plan.json", "dp": "json",
                              "aggregate": "parquet", "model": "skops",
                              "dp_model": "model.json"}


class ManifestError(ValueError):
    pass


class OutputEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: OutputKind
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not OUTPUT.fullmatch(value):
            raise ValueError("invalid output name")
        return value

    @field_validator("file")
    @classmethod
    def _plain_file(cls, value: str) -> str:
        if not OUTPUT.fullmatch(value):
            raise ValueError("output file must be a plain file name")
        return value


class OutputManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outputs: list[OutputEntry] = Field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def write_manifest(outputs_dir: Path, manifest: OutputManifest) -> None:
    """Atomically replace the manifest (the SDK while publishing, the executor after)."""
    tmp = outputs_dir / f".{MANIFEST_NAME}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.write_text(json.dumps(manifest.to_json()))
    tmp.replace(outputs_dir / MANIFEST_NAME)


def read_manifest(outputs_dir: Path) -> OutputManifest:
    """Parse the manifest a workload wrote; no manifest means no outputs."""
    path = outputs_dir / MANIFEST_NAME
    if path.is_symlink():
        raise ManifestError("output manifest is a symlink")
    if not path.exists():
        return OutputManifest()
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError("output manifest is too large")
    try:
        manifest = OutputManifest.model_validate(json.loads(path.read_bytes()))
    except (ValueError, ValidationError):
        raise ManifestError("output manifest is malformed") from None
    names = [entry.name for entry in manifest.outputs]
    if len(set(names)) != len(names):
        raise ManifestError("an output is published twice")
    return manifest
