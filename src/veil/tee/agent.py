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
from pathlib import Path
from typing import Any

from veil.tee.attestation.errors import AttestationError, KeyReleaseDenied

__all__ = [
    "MAX_FRAME_BYTES",
    "KeyAgent",
    "KeyAgentError",
    "agent_call",
    "fetch_dataset_key",
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
                reply: dict[str, Any] = {"ok": False, "reason": "too_many_requests",
                                         "message": "key agent request budget exhausted"}
            else:
                self._budget -= 1
                try:
                    reply = self._handler(request)
                except KeyReleaseDenied as exc:
                    reply = {"ok": False, "reason": exc.reason, "message": str(exc)}
                except AttestationError as exc:
                    reply = {"ok": False, "reason": "attestation_failed", "message": str(exc)}
                except Exception as exc:  # never let a workload crash the launcher's thread
                    reply = {"ok": False, "reason": "agent_error",
                             "message": f"key agent error: {type(exc).__name__}"}
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
        raise KeyReleaseDenied(str(reply.get("reason", "denied")),
                               str(reply.get("message", "key release denied")))
    return reply


def fetch_dataset_key(
    socket_path: str | Path, *, dataset_id: str, job: str, bundle_digest: str
) -> bytes:
    """RCAR from inside the sandbox: nonce, ephemeral key bound into evidence, sealed key."""
    from veil.tee.broker import WorkloadKeyRequest

    challenge = agent_call(socket_path, {"op": "challenge"})
    nonce = challenge.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise KeyAgentError("key agent returned no nonce")
    request = WorkloadKeyRequest(nonce=nonce, job=job)
    reply = agent_call(socket_path, {"op": "release", "dataset": dataset_id, "nonce": nonce,
                                     "tee_public_key": request.tee_public_key})
    sealed = reply.get("sealed")
    if not isinstance(sealed, dict):
        raise KeyAgentError("key agent returned no sealed key")
    if sealed.get("key_id") != dataset_id:
        raise KeyAgentError("key agent returned the key of another dataset")
    return request.open(sealed, bundle_digest=bundle_digest)
