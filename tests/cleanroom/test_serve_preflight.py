"""`veil serve` fails closed: it refuses to start without a tool every job needs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import _free_port


def _serve(home: Path, port: int, *extra: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "veil", "serve", "--home", str(home),
                             "--port", str(port), *extra], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _refusal(home: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = _serve(home, _free_port(), env=env)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, " ".join(out.split())


def test_refuses_to_start_without_swtpm(tmp_path: Path) -> None:
    code, out = _refusal(tmp_path / "home", {"PATH": str(tmp_path / "empty")})
    assert code == 2, out
    assert "swtpm binary is not installed" in out and "--insecure-dev" in out


def test_refuses_to_start_without_tpm2_pytss(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "tpm2_pytss"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    code, out = _refusal(tmp_path / "home", {"PYTHONPATH": str(shadow.parent)})
    assert code == 2, out
    assert "tpm2-pytss is not installed" in out


def test_refuses_invalid_sandbox_limits(tmp_path: Path) -> None:
    code, out = _refusal(tmp_path / "home", {"VEIL_SANDBOX_WALL_S": "soon"})
    assert (code, "VEIL_SANDBOX_WALL_S must be an integer" in out) == (2, True), out


def test_insecure_dev_still_starts_without_them(tmp_path: Path) -> None:
    port = _free_port()
    proc = _serve(tmp_path / "home", port, "--insecure-dev", env={"PATH": str(tmp_path / "x")})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.communicate()
