"""Networked tests over TLS 1.3 on 127.0.0.1: happy path and every failure mode."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from veil.psi.budget import QueryBudget
from veil.psi.errors import (
    AuthenticationError,
    BudgetExceeded,
    ParameterMismatch,
    PeerDisconnected,
    ProtocolError,
    PsiError,
    TransportError,
)
from veil.psi.messages import Abort
from veil.psi.runtime import run_party
from veil.psi.session import PartyData, PsiConfig, PsiParty, PsiResult
from veil.psi.transport import Identity, Listener, connect, generate_identity


@pytest.fixture()
def ids(tmp_path: Path) -> dict[str, tuple[Identity, str]]:
    return {n: generate_identity(tmp_path / n, n) for n in ("a", "b", "mallory")}


def _data(values: list[str], feats: list[int] | None = None) -> PartyData:
    f = np.array([[v] for v in feats], dtype=np.uint64) if feats else np.zeros((len(values), 0))
    return PartyData([[v.encode() for v in values]], f)


def _serve(listener: Listener, fn: Any, box: dict[str, Any], **kw: Any) -> threading.Thread:
    def target() -> None:
        try:
            chan = listener.accept(timeout=10, accept_timeout=10, **kw)
            box["result"] = fn(chan)
        except BaseException as exc:
            box["error"] = exc
        finally:
            listener.close()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def _run_pair(ids: dict, s_party: PsiParty, r_party: PsiParty, budget_dir: Path,
              receiver_ident: str = "b") -> tuple[dict, dict]:
    (a, _), (b, _) = ids["a"], ids[receiver_ident]
    listener = Listener("127.0.0.1", 0, a, ids[receiver_ident][0].cert)
    sbox: dict[str, Any] = {}
    t = _serve(listener, lambda ch: run_party(
        s_party, ch, dataset="d", budget=QueryBudget(budget_dir / "s.json")), sbox)
    rbox: dict[str, Any] = {}
    try:
        ch = connect("127.0.0.1", listener.port, b, a.cert, timeout=10)
        rbox["result"] = run_party(r_party, ch, dataset="d",
                                   budget=QueryBudget(budget_dir / "r.json"))
    except PsiError as exc:
        rbox["error"] = exc
    t.join(20)
    return sbox, rbox


@pytest.mark.parametrize("packing", ["masker", "owner"])
def test_tls_run_with_payload(ids: dict, tmp_path: Path, packing: str) -> None:
    cfg = dict(tau=4, packing=packing)
    s = PsiParty(PsiConfig("sender", **cfg), _data(["a", "b", "c"], [1, 1, 1]))
    r = PsiParty(PsiConfig("receiver", zero_column=0, **cfg), _data(["b", "c", "d"], [5, 7, 9]))
    sbox, rbox = _run_pair(ids, s, r, tmp_path)
    rs: PsiResult = sbox["result"]
    rr: PsiResult = rbox["result"]
    assert rs.round_sizes == rr.round_sizes and rs.round_sizes[0] >= 2
    total = (rs.shares.astype(object) + rr.shares.astype(object)) % 2**64
    assert sum(total[:, 1]) == 12
    assert QueryBudget(tmp_path / "s.json").spent(
        ids["b"][1], "d") == 1


def test_wrong_certificate_refused(ids: dict, tmp_path: Path) -> None:
    cfg = dict(input_dp=False)
    s = PsiParty(PsiConfig("sender", **cfg), _data(["a"]))
    r = PsiParty(PsiConfig("receiver", **cfg), _data(["a"]))
    # The listener pins b's certificate, but mallory connects (pinning a's cert correctly).
    a = ids["a"][0]
    listener = Listener("127.0.0.1", 0, a, ids["b"][0].cert)
    sbox: dict[str, Any] = {}
    t = _serve(listener, lambda ch: run_party(s, ch, dataset="d"), sbox)
    with pytest.raises((AuthenticationError, PeerDisconnected)):
        ch = connect("127.0.0.1", listener.port, ids["mallory"][0], a.cert, timeout=10)
        run_party(r, ch, dataset="d")
    t.join(20)
    assert isinstance(sbox["error"], AuthenticationError)


def test_wrong_fingerprint_refused(ids: dict) -> None:
    a, b = ids["a"][0], ids["b"][0]
    listener = Listener("127.0.0.1", 0, a, b.cert)
    box: dict[str, Any] = {}
    t = _serve(listener, lambda ch: ch, box)
    with pytest.raises(AuthenticationError, match="fingerprint"):
        connect("127.0.0.1", listener.port, b, a.cert, peer_fingerprint="00" * 32, timeout=5)
    t.join(10)


def test_parameter_mismatch_over_network(ids: dict, tmp_path: Path) -> None:
    s = PsiParty(PsiConfig("sender", tau=3, group="p256"), _data(["a"]))
    r = PsiParty(PsiConfig("receiver", tau=3), _data(["a"]))
    sbox, rbox = _run_pair(ids, s, r, tmp_path)
    assert isinstance(sbox["error"], ParameterMismatch)
    assert isinstance(rbox["error"], ParameterMismatch | ProtocolError)


def test_budget_exceeded_before_any_data(ids: dict, tmp_path: Path) -> None:
    budget = QueryBudget(tmp_path / "r.json")
    for _ in range(2):
        budget.charge(ids["a"][1], "d", 2)
    s = PsiParty(PsiConfig("sender", tau=3, queries=2), _data(["a"]))
    r = PsiParty(PsiConfig("receiver", tau=3, queries=2), _data(["a"]))
    sbox, rbox = _run_pair(ids, s, r, tmp_path)
    assert isinstance(rbox["error"], BudgetExceeded)
    assert isinstance(sbox["error"], ProtocolError | PeerDisconnected)
    assert budget.spent(ids["a"][1], "d") == 2


def _raw_peer(ids: dict, behaviour: Any) -> dict[str, Any]:
    """A listener running a real party; the connector is a hand-written (misbehaving) peer."""
    a, b = ids["a"][0], ids["b"][0]
    s = PsiParty(PsiConfig("sender", input_dp=False), _data(["a", "b"]))
    listener = Listener("127.0.0.1", 0, a, b.cert)
    box: dict[str, Any] = {}
    t = _serve(listener, lambda ch: run_party(s, ch, dataset="d"), box)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(a.cert))
    ctx.load_cert_chain(b.cert, b.key)
    raw = socket.create_connection(("127.0.0.1", listener.port), timeout=10)
    sock = ctx.wrap_socket(raw)
    sock.sendall(struct.pack(">Q", 8) + b"VEILPSI1")
    behaviour(sock)
    t.join(20)
    sock.close()
    return box


def test_malformed_frame_aborts(ids: dict) -> None:
    box = _raw_peer(ids, lambda s: s.sendall(struct.pack(">Q", 3) + b"\x01\x00\x00"))
    assert isinstance(box["error"], ProtocolError)


def test_oversized_frame_refused(ids: dict) -> None:
    box = _raw_peer(ids, lambda s: s.sendall(struct.pack(">Q", 1 << 40)))
    assert isinstance(box["error"], TransportError)
    assert "at most" in str(box["error"])


def test_peer_disconnect(ids: dict) -> None:
    box = _raw_peer(ids, lambda s: s.close())
    assert isinstance(box["error"], PeerDisconnected)


def test_internal_error_sends_abort(ids: dict, tmp_path: Path) -> None:
    """An unexpected exception on one side: typed InternalError there, PeerAborted at the peer."""
    from veil.psi.errors import InternalError, PeerAborted

    def broken(size: int) -> bytes:
        raise OSError("entropy source failed")

    s = PsiParty(PsiConfig("sender", tau=3), _data(["a", "b"]), random_bytes=broken)
    r = PsiParty(PsiConfig("receiver", tau=3), _data(["a"]))
    sbox, rbox = _run_pair(ids, s, r, tmp_path)
    assert isinstance(sbox["error"], InternalError)
    assert isinstance(rbox["error"], PeerAborted)
    assert "InternalError" in rbox["error"].reason


def test_receiver_not_charged_when_sender_refuses(ids: dict, tmp_path: Path) -> None:
    """The sender's budget is spent: it aborts before any crypto, the receiver keeps its run."""
    from veil.psi.errors import PeerAborted

    s_budget = QueryBudget(tmp_path / "s.json")
    s_budget.charge(ids["b"][1], "d", 1)
    s = PsiParty(PsiConfig("sender", tau=3, queries=1), _data(["a"]))
    r = PsiParty(PsiConfig("receiver", tau=3, queries=1), _data(["a"]))
    sbox, rbox = _run_pair(ids, s, r, tmp_path)
    assert isinstance(sbox["error"], BudgetExceeded)
    assert isinstance(rbox["error"], PeerAborted)
    assert "BudgetExceeded" in rbox["error"].reason
    assert QueryBudget(tmp_path / "r.json").spent(ids["a"][1], "d") == 0


def _read_frame(sock: ssl.SSLSocket) -> bytes:
    def exact(size: int) -> bytes:
        out = b""
        while len(out) < size:
            chunk = sock.recv(size - len(out))
            assert chunk, "connection closed"
            out += chunk
        return out

    (size,) = struct.unpack(">Q", exact(8))
    return exact(size)


def _malicious_hello(rows: int) -> bytes:
    from veil.psi.messages import PROTOCOL_VERSION, Hello

    return Hello(
        version=PROTOCOL_VERSION, is_sender=False, group="ristretto255", ids=1, input_dp=False,
        reveal_intersection=False, epsilon=2.0, queries=10, delta=0.0, tau_floor=0, min_tau=0,
        rows=rows, feature_names=(), packing="masker", statistical_security=40,
        paillier_bits=2048, public_key=b"", seed=b"").to_bytes()


def test_peer_announcing_too_many_rows_is_refused_with_abort(ids: dict) -> None:
    """Audit item 3: 2^31 rows used to set a 64 GiB frame limit; now the policy cap refuses it
    by name and the peer receives an Abort saying so."""
    from veil.psi.errors import PeerLimitExceeded
    from veil.psi.messages import decode

    seen: dict[str, Any] = {}

    def behaviour(sock: ssl.SSLSocket) -> None:
        _read_frame(sock), _read_frame(sock)  # the transport handshake, the sender's Hello
        hello = _malicious_hello(2**31)
        sock.sendall(struct.pack(">Q", len(hello)) + hello)
        seen["reply"] = decode(_read_frame(sock))

    box = _raw_peer(ids, behaviour)
    assert isinstance(box["error"], PeerLimitExceeded)
    assert "at most 10000000" in str(box["error"]) and "max_peer_rows" in str(box["error"])
    assert isinstance(seen["reply"], Abort) and "max_peer_rows" in seen["reply"].reason


def test_huge_announced_frame_costs_only_what_arrives(ids: dict) -> None:
    """A peer announcing a 320 MB frame (within the limits) and sending 64 KiB: the buffer holds
    what arrived, not what was announced (it used to be bytearray(size) up front)."""
    import tracemalloc

    rows = 10_000_000
    announced = 16 + rows * 32

    def behaviour(sock: ssl.SSLSocket) -> None:
        _read_frame(sock), _read_frame(sock)
        hello = _malicious_hello(rows)
        sock.sendall(struct.pack(">Q", len(hello)) + hello)
        _read_frame(sock)  # the sender's round-1 columns
        sock.sendall(struct.pack(">Q", announced) + b"\x03" * 65536)
        sock.close()

    tracemalloc.start()
    try:
        box = _raw_peer(ids, behaviour)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(box["error"], PeerDisconnected)
    assert peak < 32 << 20, f"peak traced memory {peak} bytes"


def test_frame_above_channel_cap_aborts(ids: dict) -> None:
    """Above Channel.max_frame: FrameTooLarge naming the limit, and an Abort to the peer."""
    from veil.psi.errors import FrameTooLarge
    from veil.psi.messages import decode

    seen: dict[str, Any] = {}

    def behaviour(sock: ssl.SSLSocket) -> None:
        _read_frame(sock), _read_frame(sock)
        sock.sendall(struct.pack(">Q", 1 << 40))
        seen["reply"] = decode(_read_frame(sock))

    box = _raw_peer(ids, behaviour)
    assert isinstance(box["error"], FrameTooLarge)
    assert "Channel.max_frame" in str(box["error"])
    assert isinstance(seen["reply"], Abort) and "FrameTooLarge" in seen["reply"].reason


def test_missing_certificate_files_are_named(ids: dict, tmp_path: Path) -> None:
    from veil.psi.errors import InputError

    a, b = ids["a"][0], ids["b"][0]
    with pytest.raises(InputError, match=r"peer certificate \(--peer-cert\) .*nope.crt"):
        Listener("127.0.0.1", 0, a, tmp_path / "nope.crt")
    with pytest.raises(InputError, match=r"own key \(--key\) .*gone.key does not exist"):
        connect("127.0.0.1", 1, Identity(a.cert, tmp_path / "gone.key"), b.cert, timeout=1)
