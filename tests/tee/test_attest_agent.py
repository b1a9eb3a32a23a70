"""The per-job key agent's wire protocol: framing limits, refusals, request budget, shutdown."""

from __future__ import annotations

import socket
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from veil.tee.agent import MAX_FRAME_BYTES, KeyAgent, KeyAgentError, agent_call
from veil.tee.attestation import KeyReleaseDenied


def _echo(request: Mapping[str, Any]) -> dict[str, Any]:
    if request.get("op") == "deny":
        raise KeyReleaseDenied("hardware_required", "policy demands hardware-backed evidence")
    if request.get("op") == "crash":
        raise RuntimeError("secret detail that must not leak")
    return {"ok": True, "echo": request.get("op")}


@pytest.fixture()
def agent() -> Iterator[KeyAgent]:
    with tempfile.TemporaryDirectory(prefix="veil-ka-t-") as tmp:
        agent = KeyAgent(Path(tmp) / "a.sock", _echo, max_requests=5)
        with agent:
            yield agent


def _raw(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        return sock.recv(65536)


def test_round_trip(agent: KeyAgent) -> None:
    assert agent_call(agent.socket_path, {"op": "challenge"}) == {"ok": True, "echo": "challenge"}


def test_denial_surfaces_with_its_reason(agent: KeyAgent) -> None:
    with pytest.raises(KeyReleaseDenied) as info:
        agent_call(agent.socket_path, {"op": "deny"})
    assert info.value.reason == "hardware_required"


def test_handler_crash_is_a_data_free_refusal(agent: KeyAgent) -> None:
    with pytest.raises(KeyReleaseDenied) as info:
        agent_call(agent.socket_path, {"op": "crash"})
    assert info.value.reason == "agent_error" and "secret" not in str(info.value)


def test_oversized_and_malformed_frames_close_the_connection(agent: KeyAgent) -> None:
    assert _raw(agent.socket_path, struct.pack(">I", MAX_FRAME_BYTES + 1)) == b""
    assert _raw(agent.socket_path, struct.pack(">I", 0)) == b""
    assert _raw(agent.socket_path, struct.pack(">I", 3) + b"{x]") == b""
    assert _raw(agent.socket_path, struct.pack(">I", 2) + b"[]") == b""
    # The agent survives bad clients.
    assert agent_call(agent.socket_path, {"op": "ok"})["ok"] is True


def test_client_refuses_to_send_an_oversized_frame(agent: KeyAgent) -> None:
    with pytest.raises(KeyAgentError):
        agent_call(agent.socket_path, {"op": "x" * (MAX_FRAME_BYTES + 1)})


def test_request_budget_is_enforced(agent: KeyAgent) -> None:
    for _ in range(5):
        agent_call(agent.socket_path, {"op": "ok"})
    with pytest.raises(KeyReleaseDenied) as info:
        agent_call(agent.socket_path, {"op": "ok"})
    assert info.value.reason == "too_many_requests"


def test_closed_agent_is_unreachable(agent: KeyAgent) -> None:
    path = agent.socket_path
    agent.close()
    assert not path.exists()
    with pytest.raises(KeyAgentError, match="cannot reach"):
        agent_call(path, {"op": "ok"})


def test_socket_path_too_long() -> None:
    with pytest.raises(KeyAgentError, match="too long"):
        KeyAgent(Path("/tmp/" + "x" * 120), _echo)


def test_requests_are_typed_and_anything_else_is_a_bad_request() -> None:
    from veil.tee.agent import ChallengeRequest, ReleaseRequest, parse_request
    from veil.tee.attestation import DenialReason

    assert parse_request({"op": "challenge"}) == ChallengeRequest()
    release = ReleaseRequest("d1", "n" * 43, "k" * 43)
    assert parse_request(release.to_wire()) == release
    for bad in ({"op": "challenge", "extra": 1}, {"op": "release", "dataset": "d1"},
                {**release.to_wire(), "dataset": 7}, {**release.to_wire(), "nonce": "x" * 129},
                {"op": "steal"}, {}):
        with pytest.raises(KeyReleaseDenied) as info:
            parse_request(bad)
        assert info.value.reason is DenialReason.BAD_REQUEST


def test_unknown_reason_codes_from_the_wire_stay_typed() -> None:
    from veil.tee.attestation import DenialReason

    assert KeyReleaseDenied("from-a-newer-peer", "x").reason is DenialReason.DENIED
    assert KeyReleaseDenied("nonce_invalid", "x").reason is DenialReason.NONCE_INVALID
