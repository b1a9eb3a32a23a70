"""Envelope encryption: key wrapping and the chunked streaming AEAD."""

from __future__ import annotations

import io
import os
import pickle

import pyarrow as pa
import pytest

from veil.crypto import (
    DataKey,
    DecryptingReader,
    EncryptingWriter,
    IntegrityError,
    KeyEncryptionKey,
)

CHUNK = 64
HEADER = 6 + 1 + 4 + 32 + 7
SEG = CHUNK + 16


class _Unseekable(io.RawIOBase):
    """A pipe-like reader with short reads and no seek/peek, like a request body."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        got = self._src.read(min(len(b), 5))
        b[: len(got)] = got
        return len(got)


def _encrypt(data: bytes, dek: DataKey, context: bytes = b"ds-1") -> bytes:
    out = io.BytesIO()
    with EncryptingWriter(out, dek, context=context, chunk_size=CHUNK) as w:
        # Write in odd pieces to exercise buffering across chunk boundaries.
        for i in range(0, len(data), 37):
            w.write(data[i : i + 37])
    return out.getvalue()


def _decrypt(blob: bytes, dek: DataKey, context: bytes = b"ds-1", seekable: bool = True) -> bytes:
    src = io.BytesIO(blob) if seekable else _Unseekable(blob)
    return DecryptingReader(src, dek, context=context).read()  # type: ignore[arg-type]


@pytest.fixture
def dek() -> DataKey:
    return DataKey.generate()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 1000])
@pytest.mark.parametrize("seekable", [True, False])
def test_round_trip(dek: DataKey, size: int, seekable: bool) -> None:
    data = os.urandom(size)
    assert _decrypt(_encrypt(data, dek), dek, seekable=seekable) == data


def test_ciphertext_is_randomised_and_hides_plaintext(dek: DataKey) -> None:
    data = b"secret-row," * 50
    a, b = _encrypt(data, dek), _encrypt(data, dek)
    assert a != b
    assert b"secret-row" not in a


def test_seek_and_random_access(dek: DataKey) -> None:
    data = os.urandom(5 * CHUNK + 7)
    r = DecryptingReader(io.BytesIO(_encrypt(data, dek)), dek, context=b"ds-1")
    assert r.seekable()
    assert r.seek(0, io.SEEK_END) == len(data)
    r.seek(3 * CHUNK - 2)
    assert r.read(10) == data[3 * CHUNK - 2 : 3 * CHUNK + 8]
    r.seek(-4, io.SEEK_END)
    assert r.read() == data[-4:]
    r.seek(1)
    assert r.read(5) == data[1:6]


def test_pyarrow_reads_through_decrypting_reader(dek: DataKey) -> None:
    table = pa.table({"a": list(range(1000)), "b": [str(i) for i in range(1000)]})
    out = io.BytesIO()
    with (
        EncryptingWriter(out, dek, context=b"ds-1", chunk_size=CHUNK) as w,
        pa.ipc.new_stream(w, table.schema) as ipc,
    ):
        ipc.write_table(table)
    reader = DecryptingReader(io.BytesIO(out.getvalue()), dek, context=b"ds-1")
    assert pa.ipc.open_stream(reader).read_all().equals(table)


@pytest.mark.parametrize("where", [0, 6, 7, 10, HEADER, HEADER + 5, HEADER + SEG + 3, -1])
def test_any_flipped_byte_is_detected(dek: DataKey, where: int) -> None:
    blob = bytearray(_encrypt(os.urandom(3 * CHUNK + 5), dek))
    blob[where] ^= 0x01
    with pytest.raises(IntegrityError):
        _decrypt(bytes(blob), dek)


@pytest.mark.parametrize("seekable", [True, False])
def test_truncation_at_chunk_boundary_is_detected(dek: DataKey, seekable: bool) -> None:
    blob = _encrypt(os.urandom(3 * CHUNK + 5), dek)
    for keep_chunks in (1, 2, 3):
        with pytest.raises(IntegrityError):
            _decrypt(blob[: HEADER + keep_chunks * SEG], dek, seekable=seekable)


@pytest.mark.parametrize("cut", [1, 10, 16, SEG + 1])
def test_truncation_inside_chunk_is_detected(dek: DataKey, cut: int) -> None:
    blob = _encrypt(os.urandom(3 * CHUNK + 5), dek)
    with pytest.raises(IntegrityError):
        _decrypt(blob[:-cut], dek)


def test_header_only_or_short_stream_is_rejected(dek: DataKey) -> None:
    blob = _encrypt(b"", dek)
    for cut in (blob[:HEADER], blob[:10], b""):
        with pytest.raises(IntegrityError):
            _decrypt(cut, dek)


def test_reordered_chunks_are_detected(dek: DataKey) -> None:
    blob = _encrypt(os.urandom(3 * CHUNK + 5), dek)
    head, c0, c1, rest = (
        blob[:HEADER],
        blob[HEADER : HEADER + SEG],
        blob[HEADER + SEG : HEADER + 2 * SEG],
        blob[HEADER + 2 * SEG :],
    )
    with pytest.raises(IntegrityError):
        _decrypt(head + c1 + c0 + rest, dek)


def test_appended_chunk_is_detected(dek: DataKey) -> None:
    blob = _encrypt(os.urandom(2 * CHUNK), dek)
    with pytest.raises(IntegrityError):
        _decrypt(blob + blob[HEADER : HEADER + SEG], dek)


def test_chunk_swapped_between_streams_is_detected(dek: DataKey) -> None:
    a = _encrypt(os.urandom(3 * CHUNK), dek)
    b = _encrypt(os.urandom(3 * CHUNK), dek)
    mixed = a[: HEADER + SEG] + b[HEADER + SEG : HEADER + 2 * SEG] + a[HEADER + 2 * SEG :]
    with pytest.raises(IntegrityError):
        _decrypt(mixed, dek)


def test_wrong_key_and_wrong_context_fail(dek: DataKey) -> None:
    blob = _encrypt(b"payload", dek, context=b"ds-1")
    with pytest.raises(IntegrityError):
        _decrypt(blob, DataKey.generate(), context=b"ds-1")
    with pytest.raises(IntegrityError):
        _decrypt(blob, dek, context=b"ds-2")


def test_aborted_stream_is_never_valid(dek: DataKey) -> None:
    out = io.BytesIO()
    with (
        pytest.raises(RuntimeError),
        EncryptingWriter(out, dek, context=b"c", chunk_size=CHUNK) as w,
    ):
        w.write(os.urandom(5 * CHUNK))
        raise RuntimeError("boom")
    with pytest.raises(IntegrityError):
        _decrypt(out.getvalue(), dek, context=b"c")


def test_writer_rejects_bad_chunk_size_and_use_after_close(dek: DataKey) -> None:
    with pytest.raises(ValueError):
        EncryptingWriter(io.BytesIO(), dek, context=b"c", chunk_size=1)
    w = EncryptingWriter(io.BytesIO(), dek, context=b"c")
    w.close()
    with pytest.raises(ValueError):
        w.write(b"x")


def test_kek_wrap_round_trip_and_binding(dek: DataKey) -> None:
    kek = KeyEncryptionKey.generate()
    blob = kek.wrap(dek, context=b"dataset:1")
    assert dek.to_bytes() not in blob
    assert kek.unwrap(blob, context=b"dataset:1") == dek
    with pytest.raises(IntegrityError):
        kek.unwrap(blob, context=b"dataset:2")
    with pytest.raises(IntegrityError):
        KeyEncryptionKey.generate().unwrap(blob, context=b"dataset:1")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(IntegrityError):
        kek.unwrap(bytes(tampered), context=b"dataset:1")
    with pytest.raises(IntegrityError):
        kek.unwrap(blob[:-1], context=b"dataset:1")
    with pytest.raises(TypeError):
        kek.wrap(kek, context=b"x")  # type: ignore[arg-type]


def test_keys_are_typed_and_redacted(dek: DataKey) -> None:
    kek = KeyEncryptionKey.generate()
    assert KeyEncryptionKey.from_bytes(kek.to_bytes()) == kek
    assert DataKey.from_bytes(dek.to_bytes()) == dek
    assert dek.to_bytes().hex() not in repr(dek) and "redacted" in repr(dek)
    assert kek.to_bytes().hex() not in str(kek)
    assert dek != DataKey.generate()
    assert dek != KeyEncryptionKey.from_bytes(dek.to_bytes())
    with pytest.raises(ValueError):
        DataKey.from_bytes(b"short")
    with pytest.raises(TypeError):
        pickle.dumps(dek)
