"""`veil psi audit`: a small real run writes its table, CSV and plot; bad flags get clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from veil.cli import app


def _audit(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["psi", "audit", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--calls", "a-b"], "--calls: expected numbers or ranges"),
    (["--calls", "5-1"], "--calls: range '5-1' must be within 1..1000 and ascending"),
    (["--calls", "0"], "--calls: range '0' must be within 1..1000"),
    (["--epsilons", "1,x"], "--epsilons: expected comma-separated numbers"),
    (["--epsilons", "-1"], "every epsilon must be finite and > 0"),
    (["--epsilons", "nan"], "every epsilon must be finite and > 0"),
    (["--oracles", "ecdh,bogus"], "unknown oracle(s) ['bogus']"),
    (["--attacks", "guess"], "unknown attack(s) ['guess']"),
    (["--reps", "0"], "reps must be in 1..100000"),
    (["--size", "0"], "|X| must be an integer >= 1"),
    (["--size", "10", "--intersection", "11"], "intersection 11 exceeds"),
    (["--ids", "1"], "k for the multi-ID oracles must be in 2..8"),
    (["--oracles", "dpca-k1-faithful"], "the *-faithful oracles need --faithful-reps >= 1"),
    (["--faithful-reps", "-1"], "reps must be in 1..100000 and faithful reps in 0..1000"),
])
def test_malformed_arguments_get_clear_errors(args: list[str], message: str,
                                              tmp_path: Path) -> None:
    code, out, err = _audit("--out", str(tmp_path / "out"), *args)
    assert code == 2
    assert f"error: {message}" in err
    assert "Traceback" not in out + err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_out_must_be_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("keep me")
    code, _, err = _audit("--out", str(target), "--calls", "1", "--reps", "1")
    assert code == 2 and "is not a folder" in err
    assert target.read_text() == "keep me"


def test_small_audit_prints_and_writes_csv_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "audit"
    code, stdout, err = _audit(
        "--out", str(out), "--calls", "1,3", "--epsilons", "8", "--reps", "2",
        "--oracles", "ecdh,dpca-k1,ppam-dualdp", "--attacks", "guo-improved,sum-only",
        "--linkage-trials", "50", "--linkage-faithful", "1", "--seed", "1")
    assert code == 0, err
    assert "| ecdh | guo-improved | - | 0 | 3 |" in stdout
    assert "| dpca-k1 | guo-improved | 8 |" in stdout
    assert "| ppam-dualdp | sum-only | 8 |" in stdout
    assert "cascade without DP (real protocol) | 0 | 2 | 100.0 | 100.0" in stdout
    assert "runtime:" in stdout
    with (out / "audit.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["oracle"] for r in rows} == {"ecdh", "dpca-k1", "ppam-dualdp"}
    assert (out / "audit.png").read_bytes().startswith(b"\x89PNG")
