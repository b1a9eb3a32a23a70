"""The "Veil" kernel of `veil lab`: `%veil` preloaded, the token inherited, never on disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.cleanroom.helpers import make_world
from veil.cli.lab import KERNEL_NAME, lab_command, lab_paths


def test_lab_command_binds_loopback_and_keeps_the_token_off_disk(tmp_path: Path) -> None:
    argv, env = lab_command(home=tmp_path, root=tmp_path, url="http://127.0.0.1:1",
                            token="veil_SECRET", port=9999, browser=False, extra=["--x"],
                            base_env={"JUPYTER_PATH": "/elsewhere"})
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    assert "--ServerApp.ip=127.0.0.1" in argv and "--no-browser" in argv and argv[-1] == "--x"
    assert env["VEIL_TOKEN"] == "veil_SECRET"
    assert env["JUPYTER_PATH"].endswith(os.pathsep + "/elsewhere")
    written = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not any("veil_SECRET" in text for text in written)


def test_veil_kernel_runs_veil_magics_against_the_server(live_server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    w = make_world(live_server)
    lab_command(home=tmp_path, root=tmp_path, url=live_server.url, token="unused", port=1,
                browser=False, extra=[], base_env={})
    data, _ = lab_paths(tmp_path)
    monkeypatch.setenv("VEIL_TOKEN", w.researcher.token or "")  # as `veil lab`'s process has it
    monkeypatch.delenv("VEIL_URL", raising=False)  # the kernel spec brings the URL
    monkeypatch.chdir(tmp_path)
    specs = KernelSpecManager(kernel_dirs=[str(Path(data) / "kernels")])
    assert specs.get_kernel_spec(KERNEL_NAME).display_name == "Veil"
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        seen: list[str] = []
        reply = kc.execute_interactive(
            "jobs = %veil jobs\nimport os\n"
            "print(repr(jobs), 'token' if os.environ.get('VEIL_TOKEN') else 'none')",
            timeout=60, output_hook=lambda msg: seen.append(str(msg["content"].get("text", ""))))
        assert reply["content"]["status"] == "ok"
        assert "".join(seen).strip() == "[] token"  # the magic reached the server: no jobs yet
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_veil_lab_without_a_token_refuses_with_a_clear_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from veil.cli import app

    monkeypatch.delenv("VEIL_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["lab", "--no-browser"])
    assert result.exit_code == 1
    assert "set VEIL_TOKEN" in result.output


def test_lab_command_refuses_when_the_sidebar_is_not_built(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import veil.lab

    monkeypatch.setattr(veil.lab, "LABEXTENSIONS", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"run scripts/setup\.sh"):
        lab_command(home=tmp_path, root=tmp_path, url="u", token="t", port=1, browser=False,
                    extra=[], base_env={})
