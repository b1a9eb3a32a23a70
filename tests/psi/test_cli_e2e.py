"""End to end: two `veil psi run` processes over TLS on 127.0.0.1, then `veil psi reveal`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

VEIL = [sys.executable, "-c", "from veil.cli import main; main()"]


def _veil(args: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([*VEIL, *args], env=env, capture_output=True, text=True,
                          timeout=240, check=False, **kw)  # type: ignore[call-overload]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, object]:
    env = {**os.environ, "VEIL_HOME": str(tmp_path / "home")}
    for name in ("alice", "bob"):
        out = _veil(["psi", "keygen", "--out", str(tmp_path / name), "--name", name], env)
        assert out.returncode == 0, out.stderr
        assert "fingerprint:" in out.stdout
    (tmp_path / "alice.csv").write_text(
        "email,phone,impressions\n"
        " Ann@Example.com ,+1 (555) 010-0001,3\n"
        "bob@example.com,,1\n"
        "carl@example.com,+1 555 010 0003,2\n"
        "dora@example.com,+1 555 010 0004,5\n")
    (tmp_path / "bob.csv").write_text(
        "email,phone,spend,is_real\n"
        "ann@example.com,,100,1\n"
        "zed@example.com,+15550100003,40,1\n"
        "yan@example.com,,7,1\n"
        ",+1-555-010-0004,25,1\n")
    return {"env": env, "tmp": tmp_path}


def _run_pair(setup: dict, extra_s: list[str], extra_r: list[str]) -> tuple:
    tmp: Path = setup["tmp"]  # type: ignore[assignment]
    env: dict[str, str] = setup["env"]  # type: ignore[assignment]
    port = _free_port()
    common = ["--ids", "email,phone", "--epsilon", "8", "--queries", "2", "--timeout", "60"]
    sender = subprocess.Popen(
        [*VEIL, "psi", "run", "--role", "sender", "--listen", f"127.0.0.1:{port}",
         "--input", str(tmp / "alice.csv"), "--features", "impressions",
         "--cert", str(tmp / "alice/alice.crt"), "--key", str(tmp / "alice/alice.key"),
         "--peer-cert", str(tmp / "bob/bob.crt"), "--output", str(tmp / "a.csv"),
         *common, *extra_s], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    receiver = _veil(
        ["psi", "run", "--role", "receiver", "--connect", f"127.0.0.1:{port}",
         "--input", str(tmp / "bob.csv"), "--features", "spend,is_real",
         "--zero-column", "is_real",
         "--cert", str(tmp / "bob/bob.crt"), "--key", str(tmp / "bob/bob.key"),
         "--peer-cert", str(tmp / "alice/alice.crt"), "--output", str(tmp / "b.csv"),
         *common, *extra_r], env)
    if receiver.returncode != 0:
        sender.terminate()
    try:
        s_out, s_err = sender.communicate(timeout=240)
    finally:
        sender.kill()
    return sender.returncode, s_out, s_err, receiver


def test_two_terminals_and_reveal(setup: dict) -> None:
    rc, s_out, s_err, receiver = _run_pair(setup, [], [])
    assert rc == 0, s_err
    assert receiver.returncode == 0, receiver.stderr
    assert "round sizes:" in s_out and "round sizes:" in receiver.stdout
    tmp: Path = setup["tmp"]  # type: ignore[assignment]
    out = _veil(["psi", "reveal", "--i-understand-row-level-reveal",  # type: ignore[arg-type]
                 str(tmp / "a.csv"), str(tmp / "b.csv")], setup["env"])
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    # ann (email), carl~zed (phone, round 2), dora (phone, round 2) are real matches.
    assert int(lines["intersection size"].split()[0]) >= 3
    assert "noisy" in lines["intersection size"]
    # Dummy rows carry 0 in the zero column and are left out of every sum.
    assert lines["real rows (receiver:is_real != 0)"] == "3"
    assert lines["sum receiver:is_real"] == "3"
    assert lines["sum receiver:spend"] == "165"
    assert lines["sum sender:impressions"] == str(3 + 2 + 5)  # ann, carl, dora


def test_features_on_one_side_and_explained_output(setup: dict) -> None:
    """Audit items 1 and 6: ids only at the sender, values at the receiver, under DP; the
    output explains the sizes; without a zero column the sums are refused."""
    rc, s_out, s_err, receiver = _run_pair(
        setup, ["--features", ""], ["--features", "spend", "--zero-column", ""])
    assert rc == 0, s_err
    assert receiver.returncode == 0, receiver.stderr
    for out in (s_out, receiver.stdout):
        assert "intersection size (estimate):" in out and "95% interval" in out
        assert "round 2:" in out and "dummy matches (tau/2)" in out
    tmp: Path = setup["tmp"]  # type: ignore[assignment]
    out = _veil(["psi", "reveal", "--i-understand-row-level-reveal",  # type: ignore[arg-type]
                 str(tmp / "a.csv"), str(tmp / "b.csv")], setup["env"])
    assert out.returncode == 1
    assert "sums refused" in out.stderr and "--zero-column" in out.stderr
    assert "sum receiver:spend" not in out.stdout


def test_duplicate_ids_refused_and_no_output(setup: dict) -> None:
    tmp: Path = setup["tmp"]  # type: ignore[assignment]
    (tmp / "bob.csv").write_text("email,phone,spend,is_real\nA@x.com,,1,1\na@x.com ,,2,1\n")
    rc, _, _, receiver = _run_pair(setup, [], [])
    assert receiver.returncode == 1
    assert "duplicate" in receiver.stderr
    assert not (tmp / "b.csv").exists() and not (tmp / "a.csv").exists()
    assert rc != 0
