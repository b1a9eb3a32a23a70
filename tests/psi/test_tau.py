"""tau from (k, T, epsilon, N, delta): spec §5 test points, bad inputs, caching, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from veil.cli import app
from veil.psi.errors import PsiError
from veil.psi.tau import MAX_TAU, TauError, choose_tau, compute_tau, delta_for_tau

# (k, T, epsilon, N) -> tau, upstream README tables with delta = 1/(10N) (spec §5)
FAST_POINTS = [
    ((1, 6, 8.0, 10**3), 15),
    ((3, 10, 2.0, 10**3), 722),
]
SLOW_POINTS = [
    ((1, 10, 2.0, 10**3), 241),
    ((3, 10, 2.0, 10**6), 1440),
    ((3, 6, 1.0, 10**3), 1462),
    ((1, 20, 1.0, 10**7), 4163),
]


@pytest.mark.parametrize(("args", "expected"), FAST_POINTS)
def test_spec_points(args: tuple[int, int, float, int], expected: int, tmp_path: Path) -> None:
    choice = choose_tau(*args, cache_dir=tmp_path)
    assert choice.tau == expected
    assert choice.achieved_delta <= choice.delta == 1 / (10 * args[3])


@pytest.mark.slow
@pytest.mark.parametrize(("args", "expected"), SLOW_POINTS)
def test_spec_points_slow(args: tuple[int, int, float, int], expected: int) -> None:
    assert compute_tau(*args) == expected


def test_tau_is_the_smallest_meeting_the_budget() -> None:
    # k=1, T=6, eps=8, N=1000: delta target 1e-4
    assert delta_for_tau(15, 6, 8.0) <= 1e-4 < delta_for_tau(14, 6, 8.0)


def test_no_noise_means_no_privacy() -> None:
    assert delta_for_tau(0, 1, 1.0) == 1.0
    assert delta_for_tau(1, 1, 100.0) > 0  # P[H=0] = 1/2 gives an infinite privacy loss


def test_choice_reports_overhead(tmp_path: Path) -> None:
    c = choose_tau(3, 10, 2.0, 1000, cache_dir=tmp_path)
    assert (c.tau, c.compositions, c.dummy_rows) == (722, 30, 2166)
    assert c.overhead_fraction == pytest.approx(2.166)
    assert c.expected_dummy_matches == 1083.0
    assert (c.ids, c.queries, c.epsilon, c.n) == (3, 10, 2.0, 1000)


def test_explicit_delta_changes_tau(tmp_path: Path) -> None:
    default = choose_tau(1, 6, 8.0, 1000, cache_dir=tmp_path)
    looser = choose_tau(1, 6, 8.0, 1000, delta=1e-2, cache_dir=tmp_path)
    assert looser.delta == 1e-2 and 1 <= looser.tau < default.tau
    assert delta_for_tau(looser.tau, 6, 8.0) <= 1e-2 < delta_for_tau(looser.tau - 1, 6, 8.0)


BAD = [
    ({"epsilon": 0.0}, "epsilon"),
    ({"epsilon": -1.0}, "epsilon"),
    ({"epsilon": math.nan}, "epsilon"),
    ({"epsilon": math.inf}, "epsilon"),
    ({"epsilon": "2"}, "epsilon"),
    ({"k": 0}, "ids"),
    ({"k": 101}, "ids"),
    ({"k": 1.5}, "ids"),
    ({"k": True}, "ids"),
    ({"queries": 0}, "queries"),
    ({"queries": -3}, "queries"),
    ({"n": 0}, "N"),
    ({"n": 1e6}, "N"),
    ({"delta": 0.0}, "delta"),
    ({"delta": 1.0}, "delta"),
    ({"delta": -0.1}, "delta"),
    ({"delta": math.nan}, "delta"),
    ({"delta": "0.1"}, "delta"),
]


@pytest.mark.parametrize(("override", "field"), BAD)
def test_bad_inputs(override: dict[str, object], field: str, tmp_path: Path) -> None:
    args: dict[str, object] = {"k": 1, "queries": 6, "epsilon": 8.0, "n": 1000, "delta": None}
    args.update(override)
    with pytest.raises(TauError, match=field):
        choose_tau(**args, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert issubclass(TauError, ValueError) and issubclass(TauError, PsiError)


def test_unreachable_budget_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(TauError, match="tau"):
        choose_tau(100, 10**4, 1e-3, 10**9, cache_dir=tmp_path)


def test_delta_for_tau_validates() -> None:
    with pytest.raises(TauError):
        delta_for_tau(-1, 1, 1.0)
    with pytest.raises(TauError):
        delta_for_tau(MAX_TAU + 1, 1, 1.0)
    with pytest.raises(TauError):
        delta_for_tau(10, 0, 1.0)
    with pytest.raises(TauError):
        delta_for_tau(10, 1, 0.0)


def test_disk_cache_written_under_veil_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    assert compute_tau(1, 6, 8.0, 1000) == 15
    data = json.loads((tmp_path / "cache" / "psi_tau.json").read_text())
    (entry,) = data.values()
    assert entry[0] == 15 and entry[1] <= 1e-4


def test_disk_cache_corrupt_or_invalid_entries_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "psi_tau.json"
    path.write_text("{not json")
    assert choose_tau(1, 6, 8.0, 1000, cache_dir=tmp_path).tau == 15
    data = json.loads(path.read_text())
    (key,) = data
    for bad in ([0, 0.0], ["15", 1e-5], [15, 0.5], [True, 1e-5], 15, [2**21, 0.0]):
        path.write_text(json.dumps({key: bad}))
        assert choose_tau(1, 6, 8.0, 1000, cache_dir=tmp_path).tau == 15


def test_disk_cache_hit_is_used(tmp_path: Path) -> None:
    """A valid entry (under a key no other test computes) is answered from disk."""
    first = choose_tau(1, 6, 8.0, 1000, cache_dir=tmp_path)
    path = tmp_path / "psi_tau.json"
    data = json.loads(path.read_text())
    (key,) = data
    fake_key = key.replace(":6:", ":999999:")
    data[fake_key] = [first.tau + 1, first.achieved_delta]
    path.write_text(json.dumps(data))
    assert choose_tau(1, 999999, 8.0, 1000, cache_dir=tmp_path).tau == first.tau + 1


def test_cli_prints_tau_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    result = CliRunner().invoke(
        app, ["psi", "tau", "--ids", "1", "--queries", "6", "--epsilon", "8", "--n", "1000"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "tau: 15"
    assert "15" in lines[1] and "1.50% of N=1000" in lines[1]


def test_cli_explicit_delta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    result = CliRunner().invoke(
        app,
        [
            "psi",
            "tau",
            "--ids",
            "1",
            "--queries",
            "6",
            "--epsilon",
            "8",
            "--n",
            "1000",
            "--delta",
            "0.01",
        ],
    )
    assert result.exit_code == 0, result.output
    tau = int(result.output.splitlines()[0].removeprefix("tau: "))
    assert tau == choose_tau(1, 6, 8.0, 1000, delta=0.01, cache_dir=tmp_path).tau


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ids", "1", "--queries", "6", "--epsilon", "0", "--n", "1000"], "epsilon"),
        (["--ids", "1", "--queries", "6", "--epsilon", "nan", "--n", "1000"], "epsilon"),
        (["--ids", "0", "--queries", "6", "--epsilon", "1", "--n", "1000"], "ids"),
        (["--ids", "1", "--queries", "0", "--epsilon", "1", "--n", "1000"], "queries"),
        (["--ids", "1", "--queries", "6", "--epsilon", "1", "--n", "0"], "N"),
        (["--ids", "1", "--queries", "6", "--epsilon", "1", "--n", "10", "--delta", "2"], "delta"),
        (["--ids", "x", "--queries", "6", "--epsilon", "1", "--n", "10"], "ids"),
        (["--queries", "6", "--epsilon", "1", "--n", "10"], "ids"),
    ],
)
def test_cli_bad_input_exits_2(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["psi", "tau", *argv])
    assert result.exit_code == 2
    assert message in result.output
    assert not result.output.startswith("tau:")
