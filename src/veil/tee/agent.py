"""The per-job key agent: the only door between a sandboxed workload and the key broker.

The launcher runs one agent per job on a unix socket bind-mounted into the sandbox (the
sandbox has no network). The workload asks for a ``challenge`` (a broker nonce), then for
``release`` of one dataset key, sending its ephemeral X25519 public key. The agent quotes
``report_data(nonce, key, job)`` with the job's attester, has the verifier appraise the quote
and the broker decide; the workload gets the key HPKE-sealed to its own key. Frames are a
4-byte big-endian length and a JSON object, capped in size and count: the agent serves one job
and is closed after the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.tee.attestation.errors import AttestationError, DenialReason, KeyReleaseDenied

__all__ = [
    "MAX_FRAME_BYTES",
    "AgentReply",
    "AgentRequest",
    "ChallengeRequest",
    "KeyAgent",
    "KeyAgentError",
    "NonceReply",
    "ReleaseRequest",
    "SealedReply",
    "agent_call",
    "fetch_dataset_key",
    "parse_request",
]

MAX_FRAME_BYTES = 64 * 1024
_LEN = struct.Struct(">I")
_IO_TIMEOUT_S = 30.0

Handler = Callable[[Mapping[str, Any]], dict[str, Any]]


class KeyAgentError(AttestationError):
    """The key agent could not be reached or spoke something other than the protocol."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise KeyAgentError("key agent connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def _read_frame(sock: socket.socket) -> dict[str, Any]:
    (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if size == 0 or size > MAX_FRAME_BYTES:
        raise KeyAgentError(f"key agent frame size {size} outside (0, {MAX_FRAME_BYTES}]")
    try:
        doc = json.loads(_recv_exact(sock, size))
    except ValueError:
        raise KeyAgentError("key agent frame is not JSON") from None
    if not isinstance(doc, dict):
        raise KeyAgentError("key agent frame must be a JSON object")
    return doc


def _write_frame(sock: socket.socket, doc: Mapping[str, Any]) -> None:
    data = json.dumps(doc, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME_BYTES:
        raise KeyAgentError("key agent frame too large")
    sock.sendall(_LEN.pack(len(data)) + data)


class KeyAgent:
    """Serves ``handler`` on a unix socket, one connection at a time, ``max_requests`` in all."""

    def __init__(self, socket_path: Path, handler: Handler, *, max_requests: int = 64) -> None:
        if len(str(socket_path)) > 100:
            raise KeyAgentError("key agent socket path is too long for a unix socket")
        self.socket_path = socket_path
        self._handler = handler
        self._budget = max_requests
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.socket_path))
            # The sandbox may map to another uid; only this job's sandbox sees the socket.
            os.chmod(self.socket_path, 0o666)
            sock.listen(4)
            sock.settimeout(0.2)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="veil-key-agent", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(_IO_TIMEOUT_S)
                self._serve_conn(conn)

    def _serve_conn(self, conn: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                request = _read_frame(conn)
            except (KeyAgentError, OSError):
                return
            if self._budget <= 0:
                reply: dict[str, Any] = _refusal(DenialReason.TOO_MANY_REQUESTS,
                                                 "key agent request budget exhausted")
            else:
                self._budget -= 1
                try:
                    reply = self._handler(request)
                except KeyReleaseDenied as exc:
                    reply = _refusal(exc.reason, exc.message)
                except AttestationError as exc:
                    reply = _refusal(DenialReason.ATTESTATION_FAILED, str(exc))
                except Exception as exc:  # never let a workload crash the launcher's thread
                    reply = _refusal(DenialReason.AGENT_ERROR,
                                     f"key agent error: {type(exc).__name__}")
            try:
                _write_frame(conn, reply)
            except (KeyAgentError, OSError):
                return

    def close(self) -> None:
        self._stop.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> KeyAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the protocol's messages (h11-style: small frozen records, checked when built) ----------

_MAX_FIELD_CHARS = 128


def _field(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_FIELD_CHARS:
        raise KeyReleaseDenied(DenialReason.BAD_REQUEST,
                               f"{name} must be a string of 1 to {_MAX_FIELD_CHARS} characters")
    return value


@dataclass(frozen=True)
class ChallengeRequest:
    """Ask for a fresh single-use broker nonce."""

    def to_wire(self) -> dict[str, Any]:
        return {"op": "challenge"}


@dataclass(frozen=True)
class ReleaseRequest:
    """Ask for one dataset's key, sealed to ``tee_public_key`` bound with ``nonce``."""

    dataset: str
    nonce: str
    tee_public_key: str

    def to_wire(self) -> dict[str, Any]:
        return {"op": "release", "dataset": self.dataset, "nonce": self.nonce,
                "tee_public_key": self.tee_public_key}


AgentRequest = ChallengeRequest | ReleaseRequest


def parse_request(doc: Mapping[str, Any]) -> AgentRequest:
    """The typed request in a frame; anything else is a ``bad_request`` refusal."""
    op = doc.get("op")
    if op == "challenge" and set(doc) == {"op"}:
        return ChallengeRequest()
    if op == "release" and set(doc) == {"op", "dataset", "nonce", "tee_public_key"}:
        return ReleaseRequest(_field(doc, "dataset"), _field(doc, "nonce"),
                              _field(doc, "tee_public_key"))
    raise KeyReleaseDenied(DenialReason.BAD_REQUEST, "unknown operation or fields")


@dataclass(frozen=True)
class NonceReply:
    nonce: str

    def to_wire(self) -> dict[str, Any]:
        return {"ok": True, "nonce": self.nonce}

    @classmethod
    def from_wire(cls, doc: Mapping[str, Any]) -> NonceReply:
        nonce = doc.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise KeyAgentError("key agent returned no nonce")
        return cls(nonce)


@dataclass(frozen=True)
class SealedReply:
    """The broker's HPKE-sealed key (``SealedKey.to_dict()``) and the bundle it was bound to."""

    sealed: Mapping[str, Any]
    bundle_digest: str

    def to_wire(self) -> dict[str, Any]:
        return {"ok": True, "sealed": dict(self.sealed), "bundle_digest": self.bundle_digest}

    @classmethod
    def from_wire(cls, doc: Mapping[str, Any]) -> SealedReply:
        sealed = doc.get("sealed")
        if not isinstance(sealed, dict):
            raise KeyAgentError("key agent returned no sealed key")
        return cls(sealed, str(doc.get("bundle_digest", "")))


AgentReply = NonceReply | SealedReply


# -- workload side -------------------------------------------------------------------------


def agent_call(socket_path: str | Path, request: Mapping[str, Any]) -> dict[str, Any]:
    """One request/response; a refusal raises KeyReleaseDenied with the broker's reason."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_IO_TIMEOUT_S)
    try:
        try:
            sock.connect(str(socket_path))
        except OSError as exc:
            raise KeyAgentError(f"cannot reach the key agent: {exc.strerror}") from None
        _write_frame(sock, request)
        reply = _read_frame(sock)
    except OSError as exc:
        raise KeyAgentError(f"key agent I/O failed: {type(exc).__name__}") from None
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    if reply.get("ok") is not True:
        raise KeyReleaseDenied(DenialReason.parse(reply.get("reason")),
                               str(reply.get("message", "key release denied"))[:500])
    return reply


def _refusal(reason: DenialReason, message: str) -> dict[str, Any]:
    return {"ok": False, "reason": str(reason), "message": message}


def fetch_dataset_key(
    socket_path: str | Path, *, dataset_id: str, job: str, bundle_digest: str
) -> bytes:
    """RCAR from inside the sandbox: nonce, ephemeral key bound into evidence, sealed key."""
    from veil.tee.broker import WorkloadKeyRequest

    nonce = NonceReply.from_wire(agent_call(socket_path, ChallengeRequest().to_wire())).nonce
    request = WorkloadKeyRequest(nonce=nonce, job=job)
    reply = SealedReply.from_wire(agent_call(socket_path, ReleaseRequest(
        dataset_id, nonce, request.tee_public_key).to_wire()))
    if reply.sealed.get("key_id") != dataset_id:
        raise KeyAgentError("key agent returned the key of another dataset")
    return request.open(dict(reply.sealed), bundle_digest=bundle_digest)
