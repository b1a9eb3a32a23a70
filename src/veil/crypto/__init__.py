"""veil.crypto: thin, typed recipes over `cryptography` (keys are objects, never loose bytes)."""

from veil.crypto.envelope import (
    DEFAULT_CHUNK_SIZE,
    DataKey,
    DecryptingReader,
    EncryptingWriter,
    EnvelopeError,
    IntegrityError,
    KeyEncryptionKey,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DataKey",
    "DecryptingReader",
    "EncryptingWriter",
    "EnvelopeError",
    "IntegrityError",
    "KeyEncryptionKey",
]
