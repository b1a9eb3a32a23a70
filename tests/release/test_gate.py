"""The release gate as a pure core: outputs on disk in, decisions out (no server, no DB)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from veil.privacy import count
from veil.release import PENDING, REFUSED, RELEASED, TO_CHARGE, InputRules, evaluate
from veil.release.executor import Executed, Failed
from veil.release.manifest import OutputEntry, OutputManifest, write_manifest

RULES = [InputRules("d1", "hospital/visits", 10)]


def _put(folder: Path, entries: list[tuple[str, str, str, bytes]]) -> None:
    manifest = []
    for name, kind, file, data in entries:
        (folder / file).write_bytes(data)
        manifest.append(OutputEntry(name=name, kind=kind, file=file, size=len(data),
                                    sha256=hashlib.sha256(data).hexdigest()))
    write_manifest(folder, OutputManifest(outputs=manifest))


def _executed(name: str, data: bytes, **kw: object) -> Executed:
    fields = {"kind": "dp", "file": f"{name}.json", "sources": ("hospital/visits",),
              "plan_digest": "sha256:p", "epsilon": 0.5, **kw}
    return Executed(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                    **fields)  # type: ignore[arg-type]


def _dp_bytes(epsilon: float = 0.5) -> bytes:
    return json.dumps(count(pd.DataFrame({"x": range(50)}), epsilon=epsilon).to_json()).encode()


def test_executor_results_from_pinned_plans_are_charged_and_others_held(tmp_path: Path) -> None:
    data = _dp_bytes()
    _put(tmp_path, [("a", "dp", "a.json", data), ("b", "dp", "b.json", data)])
    executed = {"a": _executed("a", data), "b": _executed("b", data, file="b.json")}
    decisions = {d.entry.name: d for d in evaluate(
        tmp_path, RULES, max_output_bytes=1 << 20, executed=executed,
        pinned={"a": "sha256:p", "b": "sha256:other"})}
    assert decisions["a"].status == TO_CHARGE and decisions["a"].hold is None
    assert decisions["a"].charge_to == ("hospital/visits",)
    assert decisions["b"].status == TO_CHARGE and "not pinned" in str(decisions["b"].hold)


def test_anything_the_executor_did_not_write_is_refused(tmp_path: Path) -> None:
    data = _dp_bytes()
    forged = json.dumps({**json.loads(data), "value": 123456}).encode()
    _put(tmp_path, [("forged", "dp", "forged.json", forged),
                    ("swapped", "dp", "swapped.json", forged),
                    ("agg", "aggregate", "agg.parquet", b"PAR1"),
                    ("plan", "plan", "plan.plan.json", b"{}")])
    executed = {"swapped": _executed("swapped", data)}  # the executor wrote other bytes
    decisions = {d.entry.name: d for d in evaluate(
        tmp_path, RULES, max_output_bytes=1 << 20, executed=executed,
        failed={"plan": Failed("plan", "unknown column 'x'")}, pinned={"swapped": "sha256:p"})}
    for name in ("forged", "swapped", "agg"):
        assert decisions[name].status == REFUSED
        assert "only come from the release executor" in str(decisions[name].reason)
    assert decisions["plan"].status == REFUSED and "unknown column" in str(
        decisions["plan"].reason)


def test_a_cost_that_differs_from_the_executors_is_refused(tmp_path: Path) -> None:
    data = _dp_bytes(0.5)
    _put(tmp_path, [("a", "dp", "a.json", data)])
    [decision] = evaluate(tmp_path, RULES, max_output_bytes=1 << 20,
                          executed={"a": _executed("a", data, epsilon=0.01)},
                          pinned={"a": "sha256:p"})
    assert decision.status == REFUSED and "differs" in str(decision.reason)


def test_aggregates_need_a_pinned_plan_and_tables_always_wait(tmp_path: Path) -> None:
    table = pd.DataFrame({"region": ["n", "s"], "n": [3, 40]}).to_parquet()
    _put(tmp_path, [("agg", "aggregate", "agg.parquet", table),
                    ("held", "aggregate", "held.parquet", table),
                    ("mine", "table", "mine.parquet", table)])
    executed = {name: _executed(name, table, kind="aggregate", file=f"{name}.parquet",
                                epsilon=0.0, groups=2, dropped=0) for name in ("agg", "held")}
    decisions = {d.entry.name: d for d in evaluate(
        tmp_path, RULES, max_output_bytes=1 << 20, executed=executed, pinned={"agg": "sha256:p"})}
    assert decisions["agg"].status == RELEASED and decisions["agg"].meta["groups"] == 2
    assert decisions["held"].status == PENDING
    assert decisions["mine"].status == PENDING
    assert decisions["mine"].meta["workload_computed"] is True
    assert decisions["mine"].meta["rows"] == 2


def test_a_notebook_table_with_a_small_group_carries_a_risk_hint(tmp_path: Path) -> None:
    table = pd.DataFrame({"region": ["n", "s"], "n": [3, 40]}).to_parquet()
    (tmp_path / "t.parquet").write_bytes(table)
    entry = OutputEntry(name="t", kind="table", file="t.parquet", size=len(table),
                        sha256=hashlib.sha256(table).hexdigest(), meta={"count_column": "n"})
    write_manifest(tmp_path, OutputManifest(outputs=[entry]))
    [decision] = evaluate(tmp_path, RULES, max_output_bytes=1 << 20)
    assert decision.status == PENDING
    assert decision.meta["smallest_group_claimed"] == 3 and "below" in decision.meta["risk"]


@pytest.mark.parametrize("size_delta", [1, -1])
def test_a_file_that_does_not_match_the_manifest_fails_the_job(tmp_path: Path,
                                                               size_delta: int) -> None:
    from veil.release import ManifestError

    data = _dp_bytes()
    _put(tmp_path, [("a", "dp", "a.json", data)])
    (tmp_path / "a.json").write_bytes(data + b" " if size_delta > 0 else data[:-1])
    with pytest.raises(ManifestError):
        evaluate(tmp_path, RULES, max_output_bytes=1 << 20)


def test_an_undeclared_output_is_refused_not_reviewed(tmp_path: Path) -> None:
    """Forgery-style: the notebook publishes a name the providers never approved, even one
    that looks like an executor result; it is refused before any other rule looks at it."""
    data = _dp_bytes()
    _put(tmp_path, [("declared", "scalar", "declared.json", b'{"value": 1}'),
                    ("sneaky", "scalar", "sneaky.json", b'{"value": 2}'),
                    ("sneaky_dp", "dp", "sneaky_dp.json", data)])
    decisions = {d.entry.name: d for d in evaluate(
        tmp_path, RULES, max_output_bytes=1 << 20, declared=["declared"],
        executed={"sneaky_dp": _executed("sneaky_dp", data)}, pinned={"sneaky_dp": "sha256:p"})}
    assert decisions["declared"].status == PENDING
    for name in ("sneaky", "sneaky_dp"):
        assert decisions[name].status == REFUSED
        assert "not declared at submission" in str(decisions[name].reason)


def test_nothing_declared_means_nothing_leaves(tmp_path: Path) -> None:
    _put(tmp_path, [("x", "scalar", "x.json", b'{"value": 1}')])
    [decision] = evaluate(tmp_path, RULES, max_output_bytes=1 << 20, declared=())
    assert decision.status == REFUSED
