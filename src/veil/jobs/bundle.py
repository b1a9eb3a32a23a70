"""Job bundles and their digest: what a provider approves is exactly this hash.

The digest is SHA-256 over the canonical JSON of {format, runtime, entrypoint,
files (path, sha256, size), inputs, outputs}; inputs and outputs are sets, kept sorted, so
the order of `-i`/`--output` on a command line does not change what providers approve.
Notebooks are normalised first (only cell types and sources are kept), so re-running a
notebook or clearing its outputs does not change what was approved, while any code change
does. Anyone can recompute the digest locally with `veil job digest`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from veil import __version__
from veil.crypto.canonical import canonical_json, sha256_digest
from veil.errors import VeilError
from veil.names import check_bundle_file, check_dataset_ref, check_output

BUNDLE_FORMAT = "veil-bundle/1"
RUNTIME = f"veil-runtime/{__version__} python/{sys.version_info.major}.{sys.version_info.minor}"


class BundleError(VeilError, ValueError):
    """A bundle that cannot be measured: a notebook that is not JSON, a missing entrypoint, ...

    Bad names raise `veil.names.InvalidName` (also a 422).
    """

    status_hint = 422


@dataclass(frozen=True)
class Bundle:
    files: Mapping[str, bytes]
    entrypoint: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    runtime: str = RUNTIME

    @property
    def digest(self) -> str:
        return sha256_digest(self.describe())

    def describe(self) -> dict[str, object]:
        """The document the digest is computed over."""
        return {
            "format": BUNDLE_FORMAT,
            "runtime": self.runtime,
            "entrypoint": self.entrypoint,
            "files": _file_entries(self.files),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
        }


def normalise_notebook(raw: bytes) -> bytes:
    """Keep what runs (cell type + source); drop outputs, counts and metadata."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError("notebook is not valid JSON") from None
    cells = doc.get("cells") if isinstance(doc, dict) else None
    if not isinstance(cells, list) or doc.get("nbformat") != 4:
        raise BundleError("notebook is not an nbformat 4 notebook")
    kept = []
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise BundleError("notebook has a malformed cell")
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(part) for part in source)
        if not isinstance(source, str):
            raise BundleError("notebook has a malformed cell")
        entry: dict[str, object] = {"cell_type": cell["cell_type"], "metadata": {},
                                    "source": source}
        if cell["cell_type"] == "code":
            entry.update(outputs=[], execution_count=None)
        kept.append(entry)
    normal = {
        "cells": kept,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return canonical_json(normal)


def make_bundle(files: Mapping[str, bytes], *, entrypoint: str, inputs: Sequence[str],
                outputs: Sequence[str] = (), runtime: str = RUNTIME) -> Bundle:
    """Validate names, normalise notebooks and return the measured bundle."""
    if not files:
        raise BundleError("a bundle needs at least one file")
    if entrypoint not in files:
        raise BundleError(f"entrypoint {entrypoint!r} is not among the bundle's files")
    if not entrypoint.endswith((".ipynb", ".py")):
        raise BundleError("the entrypoint must be a .ipynb or .py file")
    normal: dict[str, bytes] = {}
    for name, data in files.items():
        check_bundle_file(name)
        normal[name] = normalise_notebook(data) if name.endswith(".ipynb") else bytes(data)
    if entrypoint.endswith(".py"):
        try:
            compile(normal[entrypoint], entrypoint, "exec")
        except (SyntaxError, ValueError) as exc:
            raise BundleError(f"{entrypoint} does not compile: {type(exc).__name__}") from None
    if not inputs:
        raise BundleError("declare at least one input dataset (owner/name)")
    if len(set(inputs)) != len(inputs):
        raise BundleError("an input dataset is declared twice")
    if len(set(outputs)) != len(outputs):
        raise BundleError("an output is declared twice")
    for name in inputs:
        check_dataset_ref(name)
    for name in outputs:
        check_output(name)
    return Bundle(normal, entrypoint, tuple(sorted(inputs)), tuple(sorted(outputs)), runtime)


def _file_entries(files: Mapping[str, bytes]) -> list[dict[str, object]]:
    return [
        {"path": name, "sha256": hashlib.sha256(files[name]).hexdigest(), "size": len(files[name])}
        for name in sorted(files)
    ]

