"""Providers' key-encryption keys, one per party, kept out of the database.

The local keyring is a 0600 file per party under `$VEIL_HOME/keys`; the
database only ever holds data keys wrapped by these. The same folder holds the
platform's collaboration key (join-key tags, `veil.crypto.pseudonym`).
A KMS-backed keyring can replace this class without touching its callers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from veil.crypto.envelope import KeyEncryptionKey
from veil.crypto.pseudonym import CollaborationKey

_K = TypeVar("_K", KeyEncryptionKey, CollaborationKey)
_COLLABORATION = "collaboration.key"

_PARTY_ID = re.compile(r"^[0-9a-f]{32}$")


class LocalKeyring:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def kek(self, party_id: str) -> KeyEncryptionKey:
        """The party's KEK, created on first use."""
        if not _PARTY_ID.match(party_id):
            raise ValueError("invalid party id")
        return self._load_or_create(self.directory / f"{party_id}.kek",
                                    KeyEncryptionKey.generate, KeyEncryptionKey.from_bytes)

    def collaboration_key(self) -> CollaborationKey:
        """The platform's one collaboration key, created on first use; it never leaves here."""
        return self._load_or_create(self.directory / _COLLABORATION,
                                    CollaborationKey.generate, CollaborationKey.from_bytes)

    @staticmethod
    def _load_or_create(path: Path, generate: Callable[[], _K],
                        from_bytes: Callable[[bytes], _K]) -> _K:
        try:
            return from_bytes(path.read_bytes())
        except FileNotFoundError:
            pass
        key = generate()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another thread created it first
            return from_bytes(path.read_bytes())
        try:
            os.write(fd, key.to_bytes())
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return key
