"""Wire messages of the DPCA-PSI session: small dataclasses with an exact, length-checked codec.

Every message is one frame: a 1-byte tag, then its fields in declaration order. Integers are
unsigned big-endian, buffers are length-prefixed. Decoding rejects unknown tags, short or
trailing bytes, so a malformed frame always raises `ProtocolError`. Large buffers are returned
as zero-copy `memoryview`s of the frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import ClassVar

from veil.psi.errors import ProtocolError

Buffer = bytes | bytearray | memoryview

PROTOCOL_VERSION = 2  # 2: payload ciphertexts streamed in chunks


@dataclass(frozen=True)
class Message:
    """Base class; subclasses declare TAG and SCHEMA (field name -> wire kind)."""

    TAG: ClassVar[int] = 0
    SCHEMA: ClassVar[tuple[str, ...]] = ()

    def to_parts(self) -> list[Buffer]:
        """The encoded message as a list of buffers (big payloads are not copied)."""
        parts: list[Buffer] = [bytes([self.TAG])]
        for f, kind in zip(fields(self), self.SCHEMA, strict=True):
            _encode(parts, kind, getattr(self, f.name))
        return parts

    def to_bytes(self) -> bytes:
        return b"".join(bytes(p) for p in self.to_parts())


def _encode(parts: list[Buffer], kind: str, value: object) -> None:
    if kind == "u64":
        assert isinstance(value, int)
        parts.append(struct.pack(">Q", value))
    elif kind == "f64":
        assert isinstance(value, float)
        parts.append(struct.pack(">d", value))
    elif kind == "bool":
        parts.append(b"\x01" if value else b"\x00")
    elif kind == "str":
        assert isinstance(value, str)
        raw = value.encode()
        parts.append(struct.pack(">I", len(raw)))
        parts.append(raw)
    elif kind == "strs":
        assert isinstance(value, tuple)
        parts.append(struct.pack(">I", len(value)))
        for item in value:
            _encode(parts, "str", item)
    elif kind == "u64s":
        assert isinstance(value, tuple)
        parts.append(struct.pack(f">I{len(value)}Q", len(value), *value))
    elif kind == "bytes":
        assert isinstance(value, bytes | bytearray | memoryview)
        parts.append(struct.pack(">Q", len(value)))
        parts.append(value)
    else:  # pragma: no cover - schema typo
        raise AssertionError(kind)


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise ProtocolError("malformed message: truncated")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def read(self, kind: str) -> object:
        if kind == "u64":
            return int(struct.unpack(">Q", self.take(8))[0])
        if kind == "f64":
            return float(struct.unpack(">d", self.take(8))[0])
        if kind == "bool":
            b = self.take(1)[0]
            if b > 1:
                raise ProtocolError("malformed message: bad boolean")
            return b == 1
        if kind == "str":
            (size,) = struct.unpack(">I", self.take(4))
            if size > 4096:
                raise ProtocolError("malformed message: string too long")
            try:
                return bytes(self.take(size)).decode()
            except UnicodeDecodeError:
                raise ProtocolError("malformed message: invalid UTF-8") from None
        if kind == "strs":
            (count,) = struct.unpack(">I", self.take(4))
            if count > 4096:
                raise ProtocolError("malformed message: too many strings")
            return tuple(self.read("str") for _ in range(count))
        if kind == "u64s":
            (count,) = struct.unpack(">I", self.take(4))
            if count > 4096:
                raise ProtocolError("malformed message: too many integers")
            return tuple(struct.unpack(f">{count}Q", self.take(8 * count)))
        if kind == "bytes":
            (size,) = struct.unpack(">Q", self.take(8))
            return self.take(size)
        raise AssertionError(kind)  # pragma: no cover


@dataclass(frozen=True)
class Hello(Message):
    """Phase A+B: parameters, sizes, Paillier public key and (sender only) the common seed."""

    TAG: ClassVar[int] = 1
    SCHEMA: ClassVar[tuple[str, ...]] = (
        "u64", "bool", "str", "u64", "bool", "bool", "f64", "u64", "f64", "u64", "u64", "u64",
        "strs", "str", "u64", "u64", "bytes", "bytes",
    )
    version: int
    is_sender: bool
    group: str
    ids: int
    input_dp: bool
    reveal_intersection: bool
    epsilon: float
    queries: int
    delta: float  # 0.0 means the default 1/(10N)
    tau_floor: int  # a precomputed tau (0 = compute it from the budget)
    min_tau: int
    rows: int
    feature_names: tuple[str, ...]
    packing: str
    statistical_security: int
    paillier_bits: int
    public_key: Buffer
    seed: Buffer


@dataclass(frozen=True)
class Columns(Message):
    """Round 1: every own ID column hashed and raised to key_0, rows in the sender's order."""

    TAG: ClassVar[int] = 2
    SCHEMA: ClassVar[tuple[str, ...]] = ("bytes",)
    elements: Buffer


@dataclass(frozen=True)
class DoubleEncrypted(Message):
    """Round 1: the peer's column 0 under both keys, truncated and (normally) reshuffled."""

    TAG: ClassVar[int] = 3
    SCHEMA: ClassVar[tuple[str, ...]] = ("bytes",)
    values: Buffer


@dataclass(frozen=True)
class Blinded(Message):
    """Round c >= 2: the peer's still-unmatched column-c elements under one more key, shuffled."""

    TAG: ClassVar[int] = 4
    SCHEMA: ClassVar[tuple[str, ...]] = ("u64", "u64s", "bytes")
    round: int
    sizes: tuple[int, ...]
    elements: Buffer


@dataclass(frozen=True)
class Swapped(Message):
    """Round c >= 2: the received elements key-swapped to key_c of both parties, truncated."""

    TAG: ClassVar[int] = 5
    SCHEMA: ClassVar[tuple[str, ...]] = ("u64", "bytes")
    round: int
    values: Buffer


@dataclass(frozen=True)
class Ciphertexts(Message):
    """Payload, streamed: chunk `chunk` of own features under own Paillier key (empty once a
    party has sent all of its chunks), plus the final sizes to cross-check."""

    TAG: ClassVar[int] = 6
    SCHEMA: ClassVar[tuple[str, ...]] = ("u64s", "u64", "bytes")
    sizes: tuple[int, ...]
    chunk: int
    data: Buffer


@dataclass(frozen=True)
class Masked(Message):
    """Payload, streamed: one batch of the peer's intersection rows (output order), masked and
    re-randomised; empty for a party without features to return."""

    TAG: ClassVar[int] = 7
    SCHEMA: ClassVar[tuple[str, ...]] = ("u64", "bytes")
    chunk: int
    data: Buffer


@dataclass(frozen=True)
class Done(Message):
    """No payload: the final sizes, so both sides confirm they agree before writing output."""

    TAG: ClassVar[int] = 8
    SCHEMA: ClassVar[tuple[str, ...]] = ("u64s",)
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class Abort(Message):
    """Sent best-effort before closing on an error, so the peer reports a clear reason."""

    TAG: ClassVar[int] = 9
    SCHEMA: ClassVar[tuple[str, ...]] = ("str",)
    reason: str


_BY_TAG: dict[int, type[Message]] = {
    cls.TAG: cls
    for cls in (Hello, Columns, DoubleEncrypted, Blinded, Swapped, Ciphertexts, Masked, Done, Abort)
}


def decode(frame: Buffer) -> Message:
    """Parse one frame; ProtocolError if it is not exactly one well-formed message."""
    view = memoryview(frame).cast("B")
    if len(view) == 0:
        raise ProtocolError("malformed message: empty frame")
    cls = _BY_TAG.get(view[0])
    if cls is None:
        raise ProtocolError(f"malformed message: unknown tag {view[0]}")
    reader = _Reader(view[1:])
    values = [reader.read(kind) for kind in cls.SCHEMA]
    if reader.pos != len(reader.data):
        raise ProtocolError("malformed message: trailing bytes")
    return cls(*values)
