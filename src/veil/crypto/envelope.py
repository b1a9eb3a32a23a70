"""Envelope encryption for data at rest: a per-dataset data key wrapped by a provider KEK,
and a chunked streaming AEAD so large files are encrypted and decrypted without ever sitting
in memory whole.

Design (modelled on Tink's AES-GCM-HKDF streaming AEAD and the STREAM construction):

* Key wrapping uses AES-256-GCM with the caller's context (e.g. the dataset id) as associated
  data. AES key wrap (RFC 3394) has no associated data, so binding a wrapped key to its dataset
  would need a second derived KEK; GCM binds it directly and detects any swap of wrapped keys
  between datasets. Random 96-bit nonces are safe far beyond the number of keys one KEK wraps.
* Each stream starts with a header ``magic | version | chunk_size | salt(32) | nonce_prefix(7)``.
  The chunk key is ``HKDF-SHA256(dek, salt, info="veil-stream-v1" | context)``, so the context
  (dataset id) is bound to every chunk and each stream gets a fresh key.
* Chunk ``i`` is sealed with nonce ``nonce_prefix | i (4 bytes, big-endian) | final_flag`` and the
  header as associated data. Reordering changes ``i``, truncation at a chunk boundary leaves a
  last chunk without the final flag, appending or swapping chunks between streams changes the
  key: all surface as :class:`IntegrityError`.
"""

from __future__ import annotations

import hmac
import io
import os
import struct
from typing import IO, Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DataKey",
    "DecryptingReader",
    "EncryptingWriter",
    "EnvelopeError",
    "IntegrityError",
    "KeyEncryptionKey",
]

DEFAULT_CHUNK_SIZE: Final = 1 << 20
_KEY_LEN: Final = 32
_TAG_LEN: Final = 16
_MAGIC: Final = b"VEILSE"
_VERSION: Final = 1
_SALT_LEN: Final = 32
_PREFIX_LEN: Final = 7
_HEADER = struct.Struct(f">{len(_MAGIC)}sBI{_SALT_LEN}s{_PREFIX_LEN}s")
_MIN_CHUNK: Final = 16
_MAX_CHUNK: Final = 64 << 20
_MAX_CHUNKS: Final = 1 << 32
_WRAP_VERSION: Final = 1
_WRAP_LABEL: Final = b"veil-dek-wrap-v1\x00"
_STREAM_LABEL: Final = b"veil-stream-v1\x00"


class EnvelopeError(Exception):
    """Base class for envelope-encryption errors."""


class IntegrityError(EnvelopeError):
    """Ciphertext failed authentication: tampered, truncated, reordered, wrong key or context."""


class _SecretKey:
    """32-byte AES-256 key held as an opaque object so it never leaks through repr or logs."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != _KEY_LEN:
            raise ValueError(f"{type(self).__name__} must be exactly {_KEY_LEN} bytes")
        self._key = bytes(key)

    @classmethod
    def generate(cls) -> Any:
        return cls(os.urandom(_KEY_LEN))

    @classmethod
    def from_bytes(cls, key: bytes) -> Any:
        return cls(key)

    def to_bytes(self) -> bytes:
        """Raw key material; only for sealed storage or HPKE transport, never for logs."""
        return self._key

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (redacted)>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _SecretKey)
        return hmac.compare_digest(self._key, other._key)

    __hash__ = None  # type: ignore[assignment]  # keys are compared, never used as dict keys

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} cannot be pickled")


class DataKey(_SecretKey):
    """Per-dataset data-encryption key (DEK)."""

    @classmethod
    def generate(cls) -> DataKey:
        return cls(os.urandom(_KEY_LEN))

    @classmethod
    def from_bytes(cls, key: bytes) -> DataKey:
        return cls(key)


class KeyEncryptionKey(_SecretKey):
    """Provider key-encryption key (KEK) that wraps per-dataset data keys."""

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        return cls(os.urandom(_KEY_LEN))

    @classmethod
    def from_bytes(cls, key: bytes) -> KeyEncryptionKey:
        return cls(key)

    def wrap(self, dek: DataKey, *, context: bytes) -> bytes:
        """Seal ``dek`` so it only unwraps under this KEK and the same ``context``."""
        if not isinstance(dek, DataKey):
            raise TypeError("wrap() takes a DataKey")
        nonce = os.urandom(12)
        sealed = AESGCM(self._key).encrypt(nonce, dek.to_bytes(), _wrap_aad(context))
        return bytes([_WRAP_VERSION]) + nonce + sealed

    def unwrap(self, blob: bytes, *, context: bytes) -> DataKey:
        if len(blob) != 1 + 12 + _KEY_LEN + _TAG_LEN or blob[0] != _WRAP_VERSION:
            raise IntegrityError("wrapped key has an unknown version or wrong length")
        try:
            raw = AESGCM(self._key).decrypt(blob[1:13], blob[13:], _wrap_aad(context))
        except InvalidTag:
            raise IntegrityError(
                "wrapped key failed authentication (wrong KEK or context)"
            ) from None
        return DataKey(raw)


def _wrap_aad(context: bytes) -> bytes:
    return _WRAP_LABEL + _bytes_arg(context, "context")


def _bytes_arg(value: bytes, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"{name} must be bytes")
    return bytes(value)


def _stream_key(dek: DataKey, salt: bytes, context: bytes) -> AESGCM:
    if not isinstance(dek, DataKey):
        raise TypeError("expected a DataKey")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_LEN,
        salt=salt,
        info=_STREAM_LABEL + _bytes_arg(context, "context"),
    )
    return AESGCM(hkdf.derive(dek.to_bytes()))


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    if index >= _MAX_CHUNKS:
        raise EnvelopeError("stream exceeds the maximum number of chunks")
    return prefix + struct.pack(">IB", index, 1 if final else 0)


class EncryptingWriter(io.RawIOBase):
    """Write-only binary stream that encrypts into ``fileobj`` in authenticated chunks.

    ``close()`` seals the final chunk; without it the stream is unreadable by design
    (truncation is detected). On an exception inside ``with`` the stream is aborted, not sealed,
    so a half-written file can never pass as complete. The underlying ``fileobj`` is not closed.
    """

    def __init__(
        self,
        fileobj: IO[bytes],
        dek: DataKey,
        *,
        context: bytes,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        if not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
            raise ValueError(f"chunk_size must be in [{_MIN_CHUNK}, {_MAX_CHUNK}]")
        salt = os.urandom(_SALT_LEN)
        self._prefix = os.urandom(_PREFIX_LEN)
        self._header = _HEADER.pack(_MAGIC, _VERSION, chunk_size, salt, self._prefix)
        self._aead = _stream_key(dek, salt, context)
        self._out = fileobj
        self._chunk = chunk_size
        self._buf = bytearray()
        self._index = 0
        self._aborted = False
        self._out.write(self._header)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        self._buf += view
        # Keep at least one byte back so the final chunk is never empty unless the stream is.
        if len(self._buf) > self._chunk:
            full = (len(self._buf) - 1) // self._chunk
            mv = memoryview(self._buf)
            try:
                for k in range(full):
                    self._seal(mv[k * self._chunk : (k + 1) * self._chunk], final=False)
            finally:
                mv.release()
            del self._buf[: full * self._chunk]
        return len(view)

    def _seal(self, chunk: Any, *, final: bool) -> None:
        nonce = _nonce(self._prefix, self._index, final)
        self._out.write(self._aead.encrypt(nonce, bytes(chunk), self._header))
        self._index += 1

    def abort(self) -> None:
        """Close without sealing the final chunk (the output stays invalid)."""
        self._aborted = True
        self._buf.clear()
        super().close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._aborted:
                self._seal(self._buf, final=True)
                self._buf.clear()
                flush = getattr(self._out, "flush", None)
                if flush is not None:
                    flush()
        finally:
            super().close()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class DecryptingReader(io.RawIOBase):
    """Readable binary stream over an :class:`EncryptingWriter` output (usable by pyarrow).

    Every byte returned comes from a chunk whose tag verified. Truncation is detected when the
    (apparent) last chunk is opened, so a consumer must read to EOF to rely on completeness.
    Seekable when ``fileobj`` is seekable (needed for Parquet footers).
    """

    def __init__(self, fileobj: IO[bytes], dek: DataKey, *, context: bytes) -> None:
        super().__init__()
        self._in = fileobj
        header = _read_exact(fileobj, _HEADER.size)
        if len(header) != _HEADER.size:
            raise IntegrityError("encrypted stream is shorter than its header")
        magic, version, chunk, salt, prefix = _HEADER.unpack(header)
        if magic != _MAGIC or version != _VERSION:
            raise IntegrityError("not a Veil encrypted stream, or an unknown version")
        if not _MIN_CHUNK <= chunk <= _MAX_CHUNK:
            raise IntegrityError("encrypted stream header has an invalid chunk size")
        self._header = header
        self._prefix = prefix
        self._chunk = chunk
        self._seg = chunk + _TAG_LEN
        self._aead = _stream_key(dek, salt, context)
        self._index = 0  # next chunk to open
        self._plain = b""
        self._off = 0  # read offset in self._plain
        self._eof = False
        self._size: int | None = None
        self._pending = b""  # one byte read ahead to detect EOF on unpeekable streams
        self._final = False
        self._nchunks: int | None = None
        self._pos = 0
        if _is_seekable(fileobj):
            start = fileobj.tell()
            end = fileobj.seek(0, io.SEEK_END)
            fileobj.seek(start)
            body = end - start
            n = max(1, -(-body // self._seg))
            last = body - (n - 1) * self._seg - _TAG_LEN
            if last < 0 or (last == 0 and n > 1):
                raise IntegrityError("encrypted stream was truncated or extended")
            self._nchunks = n
            self._size = (n - 1) * chunk + last
            self._base = start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._size is not None

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._size is None:
            raise io.UnsupportedOperation("underlying stream is not seekable")
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError("invalid whence")
        if target < 0:
            raise ValueError("negative seek position")
        target = min(target, self._size)
        want = target // self._chunk
        if want >= (self._nchunks or 1):
            want = (self._nchunks or 1) - 1
        if want != self._index - 1:
            self._in.seek(self._base + want * self._seg)
            self._index = want
            self._open_next()
        self._off = target - (self._index - 1) * self._chunk
        self._eof = False
        self._pos = target
        return target

    def _open_next(self) -> None:
        """Decrypt chunk ``self._index`` into ``self._plain``."""
        seg = _read_exact(self._in, self._seg, self._pending)
        self._pending = b""
        if self._nchunks is not None:
            final = self._index == self._nchunks - 1
        elif len(seg) < self._seg:
            final = True
        else:
            final = self._peek_eof()
        if len(seg) < _TAG_LEN:
            raise IntegrityError("encrypted stream was truncated")
        try:
            self._plain = self._aead.decrypt(
                _nonce(self._prefix, self._index, final), seg, self._header
            )
        except InvalidTag:
            raise IntegrityError(
                f"chunk {self._index} failed authentication "
                "(tampered, truncated, reordered, wrong key or wrong context)"
            ) from None
        self._off = 0
        self._index += 1
        self._final = final

    def _peek_eof(self) -> bool:
        peek = getattr(self._in, "peek", None)
        if peek is not None:
            return len(peek(1)) == 0
        nxt = self._in.read(1)
        if not nxt:
            return True
        self._pending = nxt
        return False

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        n = 0
        while n < len(out):
            if self._off >= len(self._plain):
                if self._eof or (self._index > 0 and self._final):
                    self._eof = True
                    break
                self._open_next()
                continue
            take = min(len(out) - n, len(self._plain) - self._off)
            out[n : n + take] = self._plain[self._off : self._off + take]
            self._off += take
            n += take
        self._pos += n
        return n

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while True:
            chunk = self.read(DEFAULT_CHUNK_SIZE)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)


def _read_exact(f: Any, n: int, first: bytes = b"") -> bytes:
    """Read up to ``n`` bytes, looping over short reads (pipes, sockets, request bodies)."""
    parts: list[bytes] = [first] if first else []
    got = len(first)
    while got < n:
        data = f.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _is_seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, ValueError, OSError):
        return False
