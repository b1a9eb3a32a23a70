"""TCP + TLS 1.3 with mutual, pinned-certificate authentication and length-prefixed frames.

Each party has a self-signed certificate (`generate_identity`). A party pins its peer by the
peer's certificate file (used as the only trust anchor) and, optionally, its SHA-256
fingerprint. Frames are an 8-byte big-endian length followed by the payload; the receiver
passes the largest size the protocol allows at that step, capped by `Channel.max_frame`, so an
oversized frame is refused before it is buffered. A frame is read in bounded chunks and the
buffer grows only as bytes actually arrive: a peer announcing a large frame and then stalling
costs us what it sent, not what it announced.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

from veil.psi.errors import (
    AuthenticationError,
    FrameTooLarge,
    InputError,
    PeerDisconnected,
    TransportError,
)
from veil.psi.messages import Buffer

_HELLO = b"VEILPSI1"
_HEADER = struct.Struct(">Q")
_READ_CHUNK = 1 << 20
DEFAULT_MAX_FRAME = 2 << 30
"""Largest frame accepted at any step (2 GiB; round 1 of 3 IDs at 10^7 rows is ~1 GB)."""


@dataclass(frozen=True)
class Identity:
    """A party's TLS certificate and private key files."""

    cert: Path
    key: Path


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 over the certificate's DER encoding, lowercase hex."""
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode())
    return hashlib.sha256(der).hexdigest()


def _normalise_fp(value: str) -> str:
    return value.replace(":", "").strip().lower()


def generate_identity(directory: Path, name: str = "identity") -> tuple[Identity, str]:
    """Create a self-signed P-256 certificate and 0600 key file; returns its fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"veil-psi {name}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("veil-psi")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    ident = Identity(directory / f"{name}.crt", directory / f"{name}.key")
    fd = os.open(ident.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    ident.cert.write_bytes(cert_pem)
    return ident, fingerprint(cert_pem)


def _context(server: bool, me: Identity, peer_cert: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    files = (("own certificate (--cert)", Path(me.cert)), ("own key (--key)", Path(me.key)),
             ("peer certificate (--peer-cert)", Path(peer_cert)))
    for what, path in files:
        if not path.is_file():
            raise InputError(f"{what} {path} does not exist (create one with `veil psi keygen`)")
    try:
        ctx.load_cert_chain(me.cert, me.key)
    except (OSError, ssl.SSLError) as exc:
        raise AuthenticationError(
            f"cannot load own certificate {me.cert} with key {me.key}: {exc}") from None
    try:
        ctx.load_verify_locations(cafile=str(peer_cert))
    except (OSError, ssl.SSLError) as exc:
        raise AuthenticationError(f"cannot load peer certificate {peer_cert}: {exc}") from None
    return ctx


class Channel:
    """A mutually authenticated TLS connection carrying length-prefixed frames."""

    def __init__(self, sock: ssl.SSLSocket, timeout: float,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._sock = sock
        self.max_frame = max_frame
        self._sock.settimeout(timeout)
        der = sock.getpeercert(binary_form=True) or b""
        self.peer_fingerprint = hashlib.sha256(der).hexdigest()
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, parts: list[Buffer]) -> None:
        size = sum(len(memoryview(p).cast("B")) for p in parts)
        try:
            self._sock.sendall(_HEADER.pack(size))
            for part in parts:
                self._sock.sendall(part)
        except TimeoutError:
            raise TransportError("timed out sending to the peer") from None
        except (ConnectionError, ssl.SSLEOFError, BrokenPipeError):
            raise PeerDisconnected("the peer closed the connection") from None
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"send failed: {exc}") from None
        self.bytes_sent += size + _HEADER.size

    def recv(self, limit: int) -> bytearray:
        """One frame of at most min(`limit`, `max_frame`) bytes; FrameTooLarge beyond that."""
        header = self._read_exact(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        if size > self.max_frame:
            raise FrameTooLarge(
                f"peer announced a {size}-byte frame; at most {self.max_frame} bytes allowed "
                "by this party's frame limit (Channel.max_frame)")
        if size > limit:
            raise FrameTooLarge(
                f"peer announced a {size}-byte frame; at most {limit} allowed at this step")
        data = self._read_exact(size)
        self.bytes_received += size + _HEADER.size
        return data

    def _read_exact(self, size: int) -> bytearray:
        buf = bytearray()
        while len(buf) < size:
            try:
                chunk = self._sock.recv(min(size - len(buf), _READ_CHUNK))
            except TimeoutError:
                raise TransportError("timed out waiting for the peer") from None
            except ssl.SSLError as exc:
                if "ALERT" in str(exc).upper() or "CERTIFICATE" in str(exc).upper():
                    raise AuthenticationError(f"peer rejected our certificate: {exc}") from None
                raise TransportError(f"TLS error: {exc}") from None
            except (ConnectionError, OSError):
                raise PeerDisconnected("the peer closed the connection") from None
            if not chunk:
                raise PeerDisconnected("the peer closed the connection mid-protocol")
            buf += chunk  # grows with what arrived (realloc), never with what was announced
        return buf

    def handshake(self, expected_fingerprint: str | None) -> None:
        """Confirm both certificates (TLS 1.3 verifies the client's only after our first read)."""
        if expected_fingerprint and self.peer_fingerprint != _normalise_fp(expected_fingerprint):
            self.close()
            raise AuthenticationError("peer certificate does not match the pinned fingerprint")
        try:
            self.send([_HELLO])
            hello = bytes(self.recv(len(_HELLO)))
        except TransportError:
            self.close()
            raise
        if hello != _HELLO:
            self.close()
            raise TransportError("peer is not speaking the Veil PSI protocol")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wrap(raw: socket.socket, ctx: ssl.SSLContext, server: bool, timeout: float) -> ssl.SSLSocket:
    raw.settimeout(timeout)
    try:
        return ctx.wrap_socket(raw, server_side=server)
    except TimeoutError:
        raw.close()
        raise TransportError("timed out during the TLS handshake") from None
    except ssl.SSLError as exc:
        raw.close()
        raise AuthenticationError(
            f"TLS handshake failed (certificate not pinned?): {exc}") from None
    except OSError as exc:
        raw.close()
        raise PeerDisconnected(f"connection lost during the TLS handshake: {exc}") from None


def connect(host: str, port: int, me: Identity, peer_cert: Path, *,
            peer_fingerprint: str | None = None, timeout: float = 600.0,
            connect_timeout: float = 30.0, max_frame: int = DEFAULT_MAX_FRAME) -> Channel:
    """Connect to a listening peer (retrying until `connect_timeout`) and authenticate it."""
    import time

    ctx = _context(False, me, peer_cert)
    deadline = time.monotonic() + connect_timeout
    while True:
        try:
            raw = socket.create_connection((host, port), timeout=timeout)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TransportError(f"cannot connect to {host}:{port}: {exc}") from None
            time.sleep(0.1)
    chan = Channel(_wrap(raw, ctx, False, timeout), timeout, max_frame)
    chan.handshake(peer_fingerprint)
    return chan


class Listener:
    """A bound listening socket; `accept` returns one authenticated channel."""

    def __init__(self, host: str, port: int, me: Identity, peer_cert: Path) -> None:
        self._ctx = _context(True, me, peer_cert)
        self._sock = socket.create_server((host, port))
        self.port: int = self._sock.getsockname()[1]

    def accept(self, *, peer_fingerprint: str | None = None, timeout: float = 600.0,
               accept_timeout: float | None = None,
               max_frame: int = DEFAULT_MAX_FRAME) -> Channel:
        self._sock.settimeout(accept_timeout)
        try:
            raw, _ = self._sock.accept()
        except TimeoutError:
            raise TransportError("no peer connected in time") from None
        chan = Channel(_wrap(raw, self._ctx, True, timeout), timeout, max_frame)
        chan.handshake(peer_fingerprint)
        return chan

    def close(self) -> None:
        self._sock.close()
