"""The release gate: decides, per published output, what may leave.

Nothing the workload computed is trusted. Rules, in order:
  * a DP result leaves only if the release executor computed it (``Executed``, matched by
    hash) from a plan pinned at submission; its cost comes from the executor's OpenDP privacy
    map (re-derived here once more) and is charged to the budget of every dataset the plan
    read (see ``ledger.charge``). An executor result whose plan was not pinned is charged,
    then held for review: its parameters may have been chosen from the data;
  * an aggregate table leaves only if the executor computed it from a pinned plan (it counted
    the groups and dropped or refused the small ones itself); unpinned, it waits for review;
  * a DP model (``dp_model``) is treated like a DP result: only from the executor, from a
    pinned training plan, its cost re-derived (OpenDP's map; dp-accounting's RDP for DP-SGD)
    and charged;
  * a plan the executor could not evaluate is refused with the executor's reason, and a "dp",
    "aggregate" or "dp_model" entry the executor did not write is refused as a forgery;
  * a model the notebook trained (``model``) always waits for review, with the facts and the
    membership-inference audit the executor produced; it is refused when the executor could
    not load it with trusted types, or when its audited advantage exceeds (or no audit ran
    under) the strictest ``max_mia_advantage`` of the inputs;
  * anything else — tables, scalars, dicts, figures the notebook computed — waits for review
    by every provider whose data was used, with what the gate can measure about it.
An output the job did not declare at submission (``--output``) is refused before any of
this: providers approved the declared names with the digest, so an extra one is not reviewed.
Files are re-hashed and sizes checked; a malformed manifest fails the job.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.release.executor import Executed, Failed, ModelChecked
from veil.release.manifest import MEDIA_TYPES, ManifestError, OutputEntry, read_manifest
from veil.release.status import OutputStatus, advance

RELEASED = OutputStatus.RELEASED
REFUSED = OutputStatus.REFUSED
PENDING = OutputStatus.PENDING
REJECTED = OutputStatus.REJECTED
TO_CHARGE = OutputStatus.TO_CHARGE

_REVIEW = "waits for review by every data provider: the notebook computed it"
_UNPINNED = ("its plan was not pinned at submission, so its parameters may come from the "
             "data; it waits for review by every data provider")


@dataclass(frozen=True)
class InputRules:
    """What the gate needs to know about one input dataset."""

    dataset_id: str
    full_name: str
    min_group_size: int
    max_mia_advantage: float | None = None


@dataclass
class Decision:
    entry: OutputEntry
    path: Path
    status: OutputStatus
    reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Datasets a DP charge goes to (full names); None: every input of the job.
    charge_to: tuple[str, ...] | None = None
    # Set for DP results to hold for review once charged (unpinned plans).
    hold: str | None = None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.entry.kind]

    def settle(self, to: OutputStatus, reason: str | None) -> None:
        """Move to ``to`` as ``release.status`` allows (the ledger settles ``to_charge``)."""
        self.status = advance(self.status, to)
        self.reason = reason


def evaluate(outputs_dir: Path, inputs: Sequence[InputRules], *, max_output_bytes: int,
             executed: Mapping[str, Executed] | None = None,
             failed: Mapping[str, Failed] | None = None,
             pinned: Mapping[str, str] | None = None,
             models: Mapping[str, ModelChecked] | None = None,
             attested: Mapping[str, str] | None = None,
             declared: Collection[str] | None = None) -> list[Decision]:
    """Check every published output and decide its fate; DP outputs come back `TO_CHARGE`.

    ``executed``/``failed`` come from the release executor, ``pinned`` maps output names to
    the plan digests fixed in the approved bundle, ``attested`` to the digests the final
    quote covers (``FinalAttestation.digests``): a file must match all three. ``declared``
    are the output names of the approved bundle; None only for callers with no bundle.
    """
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
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise ManifestError(f"output {entry.name!r} does not match its hash")
        if attested is not None and attested.get(entry.name) != digest:
            raise ManifestError(f"output {entry.name!r} differs from what was attested")
        if declared is not None and entry.name not in declared:
            decisions.append(Decision(entry, path, REFUSED, undeclared_reason(entry.name)))
            continue
        if entry.kind == "model":
            decisions.append(_model(entry, path, inputs, (models or {}).get(entry.name)))
            continue
        decisions.append(_decide(entry, path, data, inputs, executed or {}, failed or {},
                                 pinned or {}))
    return decisions


def undeclared_reason(name: str) -> str:
    """Why an output that the approved bundle does not name is refused (also for pre-flight)."""
    return (f"output {name!r} was not declared at submission (--output); providers approved "
            "the declared outputs only")


def _decide(entry: OutputEntry, path: Path, data: bytes, inputs: Sequence[InputRules],
            executed: Mapping[str, Executed], failed: Mapping[str, Failed],
            pinned: Mapping[str, str]) -> Decision:
    if entry.kind == "plan":
        why = failed.get(entry.name)
        reason = why.reason if why else "the release executor did not evaluate this plan"
        return Decision(entry, path, REFUSED, f"query refused: {reason}")
    if entry.kind in ("dp", "aggregate", "dp_model"):
        done = executed.get(entry.name)
        if done is None or done.sha256 != entry.sha256 or done.kind != entry.kind:
            return Decision(entry, path, REFUSED,
                            f"a {entry.kind} output can only come from the release executor; "
                            "this one was written by the notebook")
        hold = None if pinned.get(entry.name) == done.plan_digest else _UNPINNED
        if entry.kind in ("dp", "dp_model"):
            return _dp(entry, path, data, done, hold)
        meta = done.meta()
        if hold:
            return Decision(entry, path, PENDING, hold, meta)
        return Decision(entry, path, RELEASED, None, meta)
    if entry.kind == "table":
        return Decision(entry, path, PENDING, _REVIEW, _measure_table(entry, data, inputs))
    return Decision(entry, path, PENDING, _REVIEW, {"workload_computed": True})


def _dp(entry: OutputEntry, path: Path, data: bytes, done: Executed,
        hold: str | None) -> Decision:
    """Re-derive the executor's cost from the mechanism (defence in depth), then charge it."""
    from veil.privacy import DPResult, PrivacyError
    from veil.privacy.training import parse_dp_model

    parse = parse_dp_model if entry.kind == "dp_model" else DPResult.from_json
    try:
        result = parse(json.loads(data))
    except (ValueError, KeyError, TypeError, PrivacyError) as exc:
        return Decision(entry, path, REFUSED,
                        f"DP output failed verification: {type(exc).__name__}")
    if abs(result.epsilon - done.epsilon) > 1e-9 * max(1.0, done.epsilon) \
            or result.delta != done.delta:
        return Decision(entry, path, REFUSED, "DP output's cost differs from the executor's")
    return Decision(entry, path, TO_CHARGE, None,
                    {**done.meta(), "epsilon": done.epsilon, "delta": done.delta},
                    charge_to=done.sources, hold=hold)


def _model(entry: OutputEntry, path: Path, inputs: Sequence[InputRules],
           checked: ModelChecked | None) -> Decision:
    """A notebook-trained model: reviewed with the executor's facts and audit, or refused."""
    if checked is None or checked.sha256 != entry.sha256:
        return Decision(entry, path, REFUSED, "the release executor did not check this model")
    if checked.refused:
        return Decision(entry, path, REFUSED, f"model refused: {checked.refused}")
    meta = {"workload_computed": True, **checked.meta}
    limits = [r for r in inputs if r.max_mia_advantage is not None]
    if limits:
        strictest = min(limits, key=lambda r: r.max_mia_advantage or 0.0)
        limit = float(strictest.max_mia_advantage or 0.0)
        if checked.advantage is None:
            return Decision(entry, path, REFUSED, (
                f"{strictest.full_name} caps membership-inference advantage at {limit:g}, and "
                f"no audit could run: {checked.meta.get('audit_skipped', 'unknown')}"), meta)
        if checked.advantage > limit:
            return Decision(entry, path, REFUSED, (
                f"membership-inference advantage {checked.advantage:.3f} exceeds "
                f"{strictest.full_name}'s max_mia_advantage {limit:g}"), meta)
    return Decision(entry, path, PENDING, _REVIEW, meta)


def _measure_table(entry: OutputEntry, data: bytes,
                   inputs: Sequence[InputRules]) -> dict[str, Any]:
    """What the gate itself can tell a reviewer about a notebook-computed table."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    meta: dict[str, Any] = {"workload_computed": True}
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception:
        meta["unreadable"] = True
        return meta
    meta.update(rows=table.num_rows, columns=table.column_names)
    column = entry.meta.get("count_column")
    if isinstance(column, str) and column in table.column_names:
        counts = table.column(column)
        if counts.type.id in _INTEGER_TYPES and table.num_rows and not counts.null_count:
            smallest = int(pc.min(counts).as_py())
            strictest = max(inputs, key=lambda rule: rule.min_group_size) if inputs else None
            meta["smallest_group_claimed"] = smallest
            if strictest is not None and smallest < strictest.min_group_size:
                meta["risk"] = (f"a group of {smallest} is below {strictest.full_name}'s "
                                f"minimum group size {strictest.min_group_size}")
    return meta


def _integer_type_ids() -> frozenset[int]:
    import pyarrow as pa

    return frozenset(t.id for t in (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(),
                                    pa.uint16(), pa.uint32(), pa.uint64()))


_INTEGER_TYPES = _integer_type_ids()
