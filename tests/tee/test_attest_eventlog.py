"""Launcher event log: order, separator, replay and transport."""

from __future__ import annotations

import hashlib

import pytest
from attest_support import BUNDLE, launch_log

from veil.crypto.canonical import canonical_json
from veil.tee.attestation import EventLog, EventLogError, measure_launch
from veil.tee.attestation.eventlog import extend


def test_replay_matches_manual_extend_chain() -> None:
    log = launch_log()
    register = bytes(32)
    for event in log.events:
        digest = hashlib.sha256(
            canonical_json({"type": event.type, "content": dict(event.content)})
        ).digest()
        register = hashlib.sha256(register + digest).digest()
    assert log.replay() == register
    assert [e.type for e in log.events][-1] == "separator"
    assert log.measurement().bundle_digest == BUNDLE


def test_transport_roundtrip_preserves_replay() -> None:
    log = launch_log()
    again = EventLog.from_list(log.to_list())
    assert again.replay() == log.replay()


def test_nothing_can_be_measured_after_the_separator() -> None:
    log = launch_log()
    with pytest.raises(EventLogError, match="sealed"):
        log.record("bundle", {"digest": BUNDLE})


def test_events_must_come_in_launcher_order() -> None:
    log = EventLog()
    with pytest.raises(EventLogError, match="out of order"):
        log.record("runtime", {"name": "x"})
    with pytest.raises(EventLogError, match="unknown"):
        log.record("env", {"A": "1"})


def test_incomplete_log_has_no_measurement() -> None:
    log = EventLog()
    log.record("bundle", {"digest": BUNDLE})
    with pytest.raises(EventLogError):
        log.measurement()


def test_stated_digest_must_match_content() -> None:
    items = launch_log().to_list()
    items[0]["content"]["digest"] = "sha256:" + "00" * 32
    with pytest.raises(EventLogError, match="stated digest"):
        EventLog.from_list(items)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda items: items.append({"type": "bundle", "content": {}}),
        lambda items: items.__setitem__(4, {"type": "separator", "content": {"value": "x"}}),
        lambda items: items[0].__setitem__("pcr", 13),
        lambda items: items.__setitem__(1, "oops"),
        lambda items: items[2].pop("content"),
    ],
)
def test_malformed_transported_logs_are_refused(mutate: object) -> None:
    items = launch_log().to_list()
    mutate(items)  # type: ignore[operator]
    with pytest.raises(EventLogError):
        EventLog.from_list(items)


def test_measure_launch_validates_inputs() -> None:
    ok = {"runtime": {"name": "py"}, "backend": {"name": "local-sandbox"}}
    with pytest.raises(EventLogError, match="bundle digest"):
        measure_launch(bundle_digest="md5:abc", inputs=[], **ok)  # type: ignore[arg-type]
    with pytest.raises(EventLogError, match="input"):
        measure_launch(
            bundle_digest=BUNDLE, inputs=[{"id": "a"}], **ok  # type: ignore[arg-type]
        )
    with pytest.raises(EventLogError, match="canonical"):
        measure_launch(
            bundle_digest=BUNDLE, inputs=[], runtime={"name": "py"},
            backend={"cpu": float("nan")},
        )


def test_extend_refuses_wrong_sizes() -> None:
    with pytest.raises(EventLogError):
        extend(b"\x00" * 31, b"\x00" * 32)
