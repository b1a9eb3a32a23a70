"""PSI test fixtures: every test gets its own $VEIL_HOME."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _veil_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_HOME", str(tmp_path_factory.mktemp("veil_home")))
