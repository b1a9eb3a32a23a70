from __future__ import annotations

from pathlib import Path

import pytest

from veil.crypto import DataKey


@pytest.fixture
def dek() -> DataKey:
    return DataKey.generate()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    d = tmp_path / "store"
    d.mkdir()
    return d
