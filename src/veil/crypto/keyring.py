"""Providers' key-encryption keys, one per party, kept out of the database.

The local keyring is a 0600 file per party under `$VEIL_HOME/keys`; the
database only ever holds data keys wrapped by these. A KMS-backed keyring can
replace this class without touching its callers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from veil.crypto.envelope import KeyEncryptionKey

_PARTY_ID = re.compile(r"^[0-9a-f]{32}$")


class LocalKeyring:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def kek(self, party_id: str) -> KeyEncryptionKey:
        """The party's KEK, created on first use."""
        if not _PARTY_ID.match(party_id):
            raise ValueError("invalid party id")
        path = self.directory / f"{party_id}.kek"
        try:
            return KeyEncryptionKey.from_bytes(path.read_bytes())
        except FileNotFoundError:
            pass
        key = KeyEncryptionKey.generate()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another thread created it first
            return KeyEncryptionKey.from_bytes(path.read_bytes())
        try:
            os.write(fd, key.to_bytes())
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return key
