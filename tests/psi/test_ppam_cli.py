"""End to end: two `veil psi run` processes, then two `veil psi measure` processes on loopback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .test_cli_e2e import VEIL, _free_port, _veil

DAY = 86400


def _write_inputs(tmp: Path, n: int = 120) -> tuple[int, int]:
    """Publisher impressions and advertiser conversions; returns (true conversions, value)."""
    rng = np.random.default_rng(7)
    t0 = 1_700_000_000 + rng.integers(0, 30 * DAY, n)
    delay = rng.integers(-3 * DAY, 12 * DAY, n)
    value = rng.integers(1, 900, n)
    pub = ["email,t0,campaign,grp"]
    adv = ["email,t1,value,is_real"]
    conv = val = 0
    for i in range(n):
        pub.append(f"u{i}@example.com,{t0[i]},{1 + i % 2},{i % 3 != 0:d}")
        if i % 4 != 3:  # a quarter of the publisher's users never convert
            adv.append(f"u{i}@example.com,{t0[i] + delay[i]},{value[i]},1")
            if 0 < delay[i] <= 7 * DAY:
                conv += 1
                val += int(min(value[i], 500))
    for j in range(30):
        adv.append(f"other{j}@example.com,{t0[0]},5,1")
    (tmp / "pub.csv").write_text("\n".join(pub) + "\n")
    (tmp / "adv.csv").write_text("\n".join(adv) + "\n")
    return conv, val


@pytest.mark.slow
def test_two_terminals_measure(tmp_path: Path) -> None:
    env = {**os.environ, "VEIL_HOME": str(tmp_path / "home")}
    for name in ("pub", "adv"):
        assert _veil(["psi", "keygen", "--out", str(tmp_path / name), "--name", name],
                     env).returncode == 0
    conv, val = _write_inputs(tmp_path)
    port = _free_port()
    common = ["--ids", "email", "--epsilon", "4", "--queries", "2", "--timeout", "120"]
    sender = subprocess.Popen(
        [*VEIL, "psi", "run", "--role", "sender", "--listen", f"127.0.0.1:{port}",
         "--input", str(tmp_path / "pub.csv"), "--features", "t0,campaign,grp",
         "--cert", str(tmp_path / "pub/pub.crt"), "--key", str(tmp_path / "pub/pub.key"),
         "--peer-cert", str(tmp_path / "adv/adv.crt"), "--output", str(tmp_path / "p.csv"),
         *common], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    receiver = _veil(
        ["psi", "run", "--role", "receiver", "--connect", f"127.0.0.1:{port}",
         "--input", str(tmp_path / "adv.csv"), "--features", "t1,value,is_real",
         "--zero-column", "is_real",
         "--cert", str(tmp_path / "adv/adv.crt"), "--key", str(tmp_path / "adv/adv.key"),
         "--peer-cert", str(tmp_path / "pub/pub.crt"), "--output", str(tmp_path / "a.csv"),
         *common], env)
    sender.communicate(timeout=240)
    assert receiver.returncode == 0 and sender.returncode == 0, receiver.stderr

    # row-level reveal is refused without the explicit flag
    refused = _veil(["psi", "reveal", str(tmp_path / "p.csv"), str(tmp_path / "a.csv")], env)
    assert refused.returncode == 1 and "--i-understand-row-level-reveal" in refused.stderr

    links = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    measure = ["psi", "measure", "--impression-time", "sender:t0",
               "--conversion-time", "receiver:t1", "--value", "receiver:value",
               "--campaign", "sender:campaign", "--campaigns", "1,2", "--group", "sender:grp",
               "--real", "receiver:is_real", "--window", "7d", "--metrics",
               "conversions,value,lift", "--cap", "500", "--epsilon", "1", "--timeout", "120"]
    pub = subprocess.Popen(
        [*VEIL, *measure, "--role", "publisher", "--shares", str(tmp_path / "p.csv"),
         "--listen", links[0], "--peer", links[1], "--dataset", "impressions",
         "--peer-cert", str(tmp_path / "adv/adv.crt"), "--output", str(tmp_path / "p.json"),
         "--cert", str(tmp_path / "pub/pub.crt"), "--key", str(tmp_path / "pub/pub.key")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    adv = _veil([*measure, "--role", "advertiser", "--shares", str(tmp_path / "a.csv"),
                 "--listen", links[1], "--peer", links[0], "--dataset", "conversions",
                 "--peer-cert", str(tmp_path / "pub/pub.crt"),
                 "--cert", str(tmp_path / "adv/adv.crt"), "--key", str(tmp_path / "adv/adv.key"),
                 "--output", str(tmp_path / "a.json")], env)
    p_out, p_err = pub.communicate(timeout=300)
    assert adv.returncode == 0, adv.stderr[-2000:]
    assert pub.returncode == 0, p_err[-2000:]
    for out in (p_out, adv.stdout):
        assert "95% interval" in out and "conversion_lift" in out
    p_rep = json.loads((tmp_path / "p.json").read_text())
    a_rep = json.loads((tmp_path / "a.json").read_text())
    assert p_rep["aggregates"] == a_rep["aggregates"]  # both see the same noisy totals
    total = sum(p_rep["campaigns"][c]["conversions"]["value"] for c in ("1", "2"))
    sd = sum(p_rep["campaigns"][c]["conversions"]["sd"] for c in ("1", "2"))
    assert abs(total - conv) <= 6 * sd
    value = sum(p_rep["campaigns"][c]["value"]["value"] for c in ("1", "2"))
    value_sd = sum(p_rep["campaigns"][c]["value"]["sd"] for c in ("1", "2"))
    assert abs(value - val) <= 6 * value_sd
    assert p_rep["epsilon"] == 1.0
    budget = json.loads((tmp_path / "home/psi/measure_budget.json").read_text())
    assert [e["epsilon"] for e in budget["entries"].values()] == [1.0, 1.0]
    # rows or ids never appear in the outputs
    assert "example.com" not in p_out + adv.stdout + (tmp_path / "p.json").read_text()
