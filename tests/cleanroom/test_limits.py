"""Sandbox limits: operator settings, lowered per dataset by a policy's [limits] section."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cleanroom.helpers import FINAL, make_world, policy, visits_csv, wait
from veil.catalog import PolicyError, parse_policy
from veil.catalog.policy import LimitsSpec
from veil.jobs.limits import effective_limits
from veil.server.platform import operator_limits
from veil.settings import Settings
from veil.tee.sandbox import SandboxLimits


def test_the_lowest_value_of_each_knob_wins() -> None:
    operator = SandboxLimits(wall_seconds=600, cpu_seconds=300, max_processes=64)
    got = effective_limits(operator, [LimitsSpec(wall_seconds=30, max_processes=128), None,
                                      LimitsSpec(wall_seconds=60, cpu_seconds=10)])
    assert (got.wall_seconds, got.cpu_seconds, got.max_processes) == (30, 10, 64)
    assert got.memory_bytes == operator.memory_bytes  # no policy constrains it
    assert effective_limits(operator, []) == operator


def test_policy_limits_are_strict() -> None:
    base = policy()
    parsed = parse_policy(base + "\n[limits]\nwall_seconds = 5\n", format="toml")
    assert parsed.limits == LimitsSpec(wall_seconds=5)
    for bad in ("wall_second = 5", "wall_seconds = 0", "wall_seconds = '5'",
                "max_processes = 4"):
        with pytest.raises(PolicyError):
            parse_policy(base + f"\n[limits]\n{bad}\n", format="toml")


def test_operator_limits_come_from_settings_and_env(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("VEIL_SANDBOX_WALL_S", "42")
    monkeypatch.setenv("VEIL_SANDBOX_MAX_PROCESSES", "32")
    settings = Settings.from_env(home=tmp_path, sandbox_output_bytes=1024**2)
    limits = operator_limits(settings)
    assert (limits.wall_seconds, limits.max_processes, limits.output_bytes) == (42, 32, 1024**2)
    assert limits.cpu_seconds == SandboxLimits().cpu_seconds
    monkeypatch.setenv("VEIL_SANDBOX_CPU_S", "lots")
    with pytest.raises(ValueError, match="VEIL_SANDBOX_CPU_S"):
        Settings.from_env(home=tmp_path)


def test_a_policy_with_a_lower_wall_time_stops_a_sleeping_job(live_server,
                                                             tmp_path: Path) -> None:
    w = make_world(live_server)
    csv = tmp_path / "visits.csv"
    csv.write_text(visits_csv(30))
    w.hospital.upload("visits", csv, policy=policy() + "\n[limits]\nwall_seconds = 3\n",
                      policy_format="toml")
    job = w.researcher.submit({"a.py": b"import time\ntime.sleep(60)\n"}, entrypoint="a.py",
                              inputs=["hospital/visits"])
    w.hospital.approve(job["id"], job["digest"])
    done = wait(w.researcher, job["id"], FINAL, timeout=90)
    assert done["state"] == "failed", done
    assert done["reason"] == "wall-clock timeout after 3 s"
