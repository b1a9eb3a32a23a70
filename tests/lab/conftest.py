"""Fixtures for the JupyterLab workspace: a real `veil lab` process on loopback."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port


@dataclass
class LabServer:
    url: str
    token: str  # Jupyter's own token (the browser's), not the Veil token
    root: Path
    log: Path

    def get(self, path: str, **kw: object) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"},
                         timeout=60, **kw)  # type: ignore[arg-type]

    def post(self, path: str, json: object = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=json, timeout=120,
                          headers={"Authorization": f"token {self.token}"})


@pytest.fixture()
def lab_factory(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(veil_url: str, veil_token: str, root: Path) -> LabServer:
        port = _free_port()
        token = secrets.token_hex(16)
        log = tmp_path / f"lab-{port}.log"
        env = {**os.environ, "VEIL_HOME": str(tmp_path / "lab-home"), "VEIL_URL": veil_url,
               "VEIL_TOKEN": veil_token, "JUPYTER_CONFIG_DIR": str(tmp_path / "jconf"),
               "JUPYTER_DATA_DIR": str(tmp_path / "jdata"),
               "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrun")}
        cmd = [sys.executable, "-m", "veil", "lab", "--no-browser", "--port", str(port),
               "--dir", str(root), "--", f"--IdentityProvider.token={token}",
               *(["--allow-root"] if os.geteuid() == 0 else [])]
        with log.open("wb") as fh:
            proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"veil lab exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/api/status", params={"token": token},
                             timeout=2).status_code == 200:
                    return LabServer(url, token, root, log)
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"veil lab did not start: {log.read_text()[-3000:]}")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
