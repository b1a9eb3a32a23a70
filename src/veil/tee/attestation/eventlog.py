"""Launcher measurement: an ordered event log replayed into one measurement register.

Mirrors Confidential Space's launcher: every launch input is an event whose digest extends a
PCR, and a final separator closes the log so the workload cannot add measurements that look
like launcher ones. The verifier replays the log and compares the result with the quoted PCR.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from veil.crypto.canonical import CanonicalJSONError, canonical_json
from veil.tee.attestation.errors import EventLogError

__all__ = [
    "EVENT_ORDER",
    "MEASUREMENT_PCR",
    "Event",
    "EventLog",
    "LaunchMeasurement",
    "extend",
    "measure_launch",
]

MEASUREMENT_PCR = 16
"""The PCR the launcher extends (resettable, zero after a fresh swtpm start)."""

EVENT_ORDER = ("bundle", "runtime", "input_manifest", "backend_config", "separator")
_SEPARATOR_CONTENT: dict[str, Any] = {"value": "veil-launch-separator-v1"}
_DIGEST_PREFIX = "sha256:"


def extend(register: bytes, digest: bytes) -> bytes:
    """TPM2 extend semantics for SHA-256: ``new = SHA256(old || digest)``."""
    if len(register) != 32 or len(digest) != 32:
        raise EventLogError("register and digest must be 32-byte SHA-256 values")
    return hashlib.sha256(register + digest).digest()


@dataclass(frozen=True)
class Event:
    type: str
    content: Mapping[str, Any]

    @property
    def digest(self) -> bytes:
        try:
            return hashlib.sha256(
                canonical_json({"type": self.type, "content": dict(self.content)})
            ).digest()
        except CanonicalJSONError as exc:
            raise EventLogError(f"event {self.type!r} is not canonical JSON: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pcr": MEASUREMENT_PCR,
            "type": self.type,
            "digest": _DIGEST_PREFIX + self.digest.hex(),
            "content": dict(self.content),
        }


@dataclass
class EventLog:
    """Append-only until sealed by the separator."""

    events: list[Event] = field(default_factory=list)

    @property
    def sealed(self) -> bool:
        return bool(self.events) and self.events[-1].type == "separator"

    def record(self, type_: str, content: Mapping[str, Any]) -> Event:
        if self.sealed:
            raise EventLogError("event log is sealed; nothing may be measured after the separator")
        if type_ not in EVENT_ORDER:
            raise EventLogError(f"unknown event type {type_!r}")
        expected = EVENT_ORDER[len(self.events)] if len(self.events) < len(EVENT_ORDER) else None
        if type_ != expected:
            raise EventLogError(f"event {type_!r} out of order (expected {expected!r})")
        event = Event(type_, dict(content))
        event.digest  # noqa: B018 - validate canonical form now, not at quote time
        self.events.append(event)
        return event

    def seal(self) -> Event:
        return self.record("separator", _SEPARATOR_CONTENT)

    def replay(self) -> bytes:
        register = bytes(32)
        for event in self.events:
            register = extend(register, event.digest)
        return register

    def to_list(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.events]

    @classmethod
    def from_list(cls, items: Iterable[Any]) -> EventLog:
        """Parse a transported log, re-deriving every digest (a stated digest is only checked)."""
        log = cls()
        for item in items:
            if not isinstance(item, Mapping):
                raise EventLogError("event log entries must be objects")
            type_, content = item.get("type"), item.get("content")
            if not isinstance(type_, str) or not isinstance(content, Mapping):
                raise EventLogError("event log entry lacks type or content")
            if item.get("pcr", MEASUREMENT_PCR) != MEASUREMENT_PCR:
                raise EventLogError("event log entry names an unexpected PCR")
            if type_ == "separator" and dict(content) != _SEPARATOR_CONTENT:
                raise EventLogError("separator event has unexpected content")
            event = log.record(type_, content)
            stated = item.get("digest")
            if stated is not None and stated != _DIGEST_PREFIX + event.digest.hex():
                raise EventLogError(f"stated digest of event {type_!r} does not match its content")
        return log

    def measurement(self) -> LaunchMeasurement:
        """The launch facts, once the log is complete."""
        if not self.sealed or len(self.events) != len(EVENT_ORDER):
            raise EventLogError("event log is incomplete or lacks its separator")
        by_type = {e.type: dict(e.content) for e in self.events}
        bundle = by_type["bundle"]
        digest = bundle.get("digest")
        if not isinstance(digest, str) or not digest.startswith(_DIGEST_PREFIX):
            raise EventLogError("bundle event lacks a sha256 digest")
        return LaunchMeasurement(
            bundle=bundle,
            runtime=by_type["runtime"],
            inputs=list(by_type["input_manifest"].get("datasets", [])),
            backend=by_type["backend_config"],
        )


@dataclass(frozen=True)
class LaunchMeasurement:
    bundle: dict[str, Any]
    runtime: dict[str, Any]
    inputs: list[Any]
    backend: dict[str, Any]

    @property
    def bundle_digest(self) -> str:
        return str(self.bundle["digest"])


def measure_launch(
    *,
    bundle_digest: str,
    runtime: Mapping[str, str],
    inputs: Sequence[Mapping[str, str]],
    backend: Mapping[str, Any],
    bundle_runtime: str = "",
    bundle_entrypoint: str = "",
    bundle_inputs: Sequence[str] = (),
    bundle_outputs: Sequence[str] = (),
) -> EventLog:
    """Build the sealed launch log.

    ``inputs`` are ``{"id", "sha256"}`` content digests of the datasets mounted for the job;
    ``bundle_runtime/entrypoint/inputs/outputs`` are the declared bundle fields a consumer
    needs to recompute the bundle digest from their own files.
    """
    if not bundle_digest.startswith(_DIGEST_PREFIX) or len(bundle_digest) != 71:
        raise EventLogError("bundle digest must be 'sha256:<64 hex>'")
    datasets = []
    for item in inputs:
        if set(item) != {"id", "sha256"}:
            raise EventLogError("each input must be exactly {'id', 'sha256'}")
        datasets.append({"id": str(item["id"]), "sha256": str(item["sha256"])})
    log = EventLog()
    log.record(
        "bundle",
        {
            "digest": bundle_digest,
            "runtime": bundle_runtime,
            "entrypoint": bundle_entrypoint,
            "inputs": list(bundle_inputs),
            "outputs": list(bundle_outputs),
        },
    )
    log.record("runtime", dict(runtime))
    log.record("input_manifest", {"datasets": datasets})
    log.record("backend_config", dict(backend))
    log.seal()
    return log
