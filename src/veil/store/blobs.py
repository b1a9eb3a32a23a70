"""Content blobs on the local file system (an S3-compatible store later).

Blobs are written to a temporary name and renamed into place, so a crash never
leaves a half-written blob under a real key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from veil.names import BLOB_KEY, InvalidName


class BlobError(InvalidName):
    """A key outside the blob key grammar; build keys with the `veil.names` builders."""


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, key: str) -> Path:
        if BLOB_KEY.fullmatch(key) is None or ".." in key:
            raise BlobError(f"invalid blob key {key!r}")
        return self.root / key

    def staging_path(self, key: str) -> Path:
        """A temporary sibling of `key`'s path; `commit` renames it into place."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")

    def commit(self, staged: Path, key: str) -> None:
        os.replace(staged, self.path(key))

    def put(self, key: str, data: bytes) -> None:
        staged = self.staging_path(key)
        staged.write_bytes(data)
        self.commit(staged, key)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete_prefix(self, prefix: str) -> None:
        base = self.path(prefix)
        if base.is_file():
            base.unlink()
            return
        if base.is_dir():
            for child in sorted(base.rglob("*"), reverse=True):
                child.unlink() if child.is_file() or child.is_symlink() else child.rmdir()
            base.rmdir()
