"""The pre-flight's gate preview as a pure core: outputs on disk + views in, verdicts out.

What the notebook wrote is never taken at its word: a forged DP result is refused, and the
costs and group counts come from evaluating the published plans on the views here.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from tests.cleanroom.helpers import aggregate_query, dp_query

from veil.jobs.bundle import make_bundle
from veil.jobs.preflight import PreflightPlan, _Input, preview
from veil.privacy import Budget, BudgetPolicy
from veil.release.manifest import OutputEntry, OutputManifest, write_manifest
from veil.tee.sandbox import SandboxLimits

RULES = {"privacy_unit": {"id_column": "pid", "max_contributions": 1},
         "categories": {"g": ["a", "b", "c"]}, "min_group_size": 3, "small_groups": "refuse"}


def _plan(outputs: list[str], pinned: dict[str, str], spent: float = 0.0) -> PreflightPlan:
    frame = pd.DataFrame({"pid": range(10), "g": ["a"] * 8 + ["b", "c"], "x": range(10)})
    buf = io.BytesIO()
    frame.to_parquet(buf)
    bundle = make_bundle({"a.py": b"import veil\n"}, entrypoint="a.py", inputs=["h/v"],
                         outputs=outputs)
    policy = BudgetPolicy.parse({"epsilon": 2.0, "delta": 0.0, "rule": "basic"})
    spent_list = [Budget(spent, 0.0)] if spent else []
    inp = _Input("h/v", "mock", buf.getvalue(), RULES, frozenset(frame.columns),
                 (policy, spent_list))
    return PreflightPlan(bundle, (inp,), SandboxLimits(), pinned)


def _write(folder: Path, items: list[tuple[str, str, str, bytes]]) -> None:
    entries = []
    for name, kind, file, data in items:
        (folder / file).write_bytes(data)
        entries.append(OutputEntry(name=name, kind=kind, file=file, size=len(data),
                                   sha256=hashlib.sha256(data).hexdigest()))
    write_manifest(folder, OutputManifest(outputs=entries))


def test_verdicts_costs_and_budgets(tmp_path: Path) -> None:
    count = dp_query(["h/v"], "count", epsilon=1.5)
    agg = aggregate_query(["h/v"], ["g"], n={"fn": "count", "column": None})
    forged = json.dumps({"mechanism": "count", "value": 10, "epsilon": 0.0}).encode()
    _write(tmp_path, [("c1", "plan", "c1.plan.json", count.to_bytes()),
                      ("c2", "plan", "c2.plan.json", count.to_bytes()),
                      ("groups", "plan", "groups.plan.json", agg.to_bytes()),
                      ("fake", "dp", "fake.json", forged),
                      ("t", "scalar", "t.json", b'{"value": 1}'),
                      ("odd", "scalar", "odd.json", b'{"value": 2}')])
    pins = {"c1": count.digest, "c2": count.digest, "groups": agg.digest}
    outs, budgets = preview(tmp_path, _plan(["c1", "c2", "groups", "fake", "t"], pins))
    got = {o.name: o for o in outs}
    assert got["c1"].verdict == "auto-release"
    assert got["c1"].epsilon == pytest.approx(1.5)  # OpenDP's map of the view evaluation
    assert got["c2"].verdict == "refused" and "needs epsilon 1.5, 0.5 left" in str(got["c2"].reason)
    assert got["groups"].verdict == "refused" and "2 of 3 groups" in str(got["groups"].reason)
    assert got["fake"].verdict == "refused" and "release executor" in str(got["fake"].reason)
    assert got["t"].verdict == "review"
    assert got["odd"].verdict == "refused" and "not declared" in str(got["odd"].reason)
    [budget] = budgets
    assert budget["epsilon_needed"] == pytest.approx(3.0)
    assert (budget["epsilon_left"], budget["fits"], budget["rule"]) == (2.0, False, "basic")


def test_unpinned_or_tampered_plans(tmp_path: Path) -> None:
    count = dp_query(["h/v"], "count", epsilon=0.5)
    other = dp_query(["x/y"], "count", epsilon=0.5)
    _write(tmp_path, [("c", "plan", "c.plan.json", count.to_bytes()),
                      ("outside", "plan", "outside.plan.json", other.to_bytes())])
    (tmp_path / "c.plan.json").write_bytes(count.to_bytes() + b" ")  # not what the manifest says
    outs, _ = preview(tmp_path, _plan(["c", "outside"], {}, spent=1.0))
    got = {o.name: o for o in outs}
    assert got["c"].verdict == "refused" and "does not match" in str(got["c"].reason)
    assert got["outside"].verdict == "refused" and "not an input" in str(got["outside"].reason)
    _write(tmp_path, [("c", "plan", "c.plan.json", count.to_bytes())])
    [out], [budget] = preview(tmp_path, _plan(["c"], {}, spent=1.0))
    assert out.verdict == "review" and "not pinned" in str(out.reason)
    assert (budget["epsilon_left"], budget["fits"]) == (1.0, True)
