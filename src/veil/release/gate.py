"""The release gate: decides, per published output, what may leave.

Rules, in order:
  * a DP result is charged to the privacy budget of every input (see `charge`),
  * an aggregate table (published with a count column) must have every group at
    least as large as the strictest input's minimum group size, else refused,
  * anything else waits for review by every provider whose data was used.
The gate trusts nothing the workload wrote: files are re-hashed, sizes checked,
and a malformed manifest fails the job.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.release.manifest import MEDIA_TYPES, ManifestError, OutputEntry, read_manifest

RELEASED = "released"
REFUSED = "refused"
PENDING = "pending_review"
REJECTED = "rejected"
TO_CHARGE = "to_charge"  # a verified DP output; the ledger turns it into released or refused


@dataclass(frozen=True)
class InputRules:
    """What the gate needs to know about one input dataset."""

    dataset_id: str
    full_name: str
    min_group_size: int


@dataclass
class Decision:
    entry: OutputEntry
    path: Path
    status: str
    reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.entry.kind]


def evaluate(outputs_dir: Path, inputs: Sequence[InputRules], *,
             max_output_bytes: int) -> list[Decision]:
    """Check every published output and decide its fate; DP outputs come back `TO_CHARGE`."""
    manifest = read_manifest(outputs_dir)
    total = 0
    decisions: list[Decision] = []
    for entry in manifest.outputs:
        path = outputs_dir / entry.file
        if path.is_symlink() or not path.is_file():
            raise ManifestError(f"output {entry.name!r} has no regular file")
        size = path.stat().st_size
        total += size
        if size != entry.size or total > max_output_bytes:
            raise ManifestError(f"output {entry.name!r} has the wrong size or outputs are too big")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ManifestError(f"output {entry.name!r} does not match its hash")
        decisions.append(_decide(entry, path, data, inputs))
    return decisions


def _decide(entry: OutputEntry, path: Path, data: bytes,
            inputs: Sequence[InputRules]) -> Decision:
    if entry.kind == "dp":
        return _dp(entry, path, data)
    if entry.kind == "table" and "count_column" in entry.meta:
        return _aggregate(entry, path, data, inputs)
    return Decision(entry, path, PENDING, "waits for review by every data provider")


def _dp(entry: OutputEntry, path: Path, data: bytes) -> Decision:
    """Re-derive the declared cost from the mechanism; a mismatch is refused outright."""
    from veil.privacy import DPResult, PrivacyError

    try:
        result = DPResult.from_json(json.loads(data))
    except (ValueError, KeyError, TypeError, PrivacyError) as exc:
        return Decision(entry, path, REFUSED,
                        f"DP output failed verification: {type(exc).__name__}")
    return Decision(entry, path, TO_CHARGE, None,
                    {"mechanism": result.mechanism, "epsilon": result.epsilon,
                     "delta": result.delta})


def _aggregate(entry: OutputEntry, path: Path, data: bytes,
               inputs: Sequence[InputRules]) -> Decision:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = str(entry.meta["count_column"])
    strictest = max(inputs, key=lambda rule: rule.min_group_size)
    try:
        table = pq.read_table(io.BytesIO(data))
        counts = table.column(column)
    except Exception:
        return Decision(entry, path, REFUSED, f"aggregate table has no readable column {column!r}")
    if counts.type.id not in _INTEGER_TYPES:
        return Decision(entry, path, REFUSED, f"count column {column!r} is not an integer column")
    if counts.null_count:
        return Decision(entry, path, REFUSED, f"count column {column!r} has missing counts")
    small = int(pc.sum(pc.less(counts, strictest.min_group_size)).as_py() or 0)
    if small:
        return Decision(
            entry, path, REFUSED,
            f"{small} of {len(counts)} groups are smaller than the minimum group size "
            f"{strictest.min_group_size} required by {strictest.full_name}",
        )
    return Decision(entry, path, RELEASED, None,
                    {"min_group_size": strictest.min_group_size, "groups": len(counts)})


def _integer_type_ids() -> frozenset[int]:
    import pyarrow as pa

    return frozenset(t.id for t in (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(),
                                    pa.uint16(), pa.uint32(), pa.uint64()))


_INTEGER_TYPES = _integer_type_ids()
