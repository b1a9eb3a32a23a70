"""The ads-measurement template job through the real server: publisher and advertiser upload,
the researcher submits the template with its pinned plans, both approve, and the executor
releases DP conversions and values per campaign and group, each charged."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.cleanroom.helpers import FINAL, make_world, wait
from veil.privacy.plans import PINNED_PLANS_FILE, pin_plans
from veil.templates.ads import OUTPUTS, AdsParams, notebook, plans

POLICY = """\
consumers = ["lab"]
min_group_size = 5
join_keys = ["user_id"]
categories = {cats}

[privacy_unit]
id_column = "user_id"
max_contributions = 1

[approval]
mode = "manual"

[budget]
epsilon = 4.0
delta = 0.0
rule = "basic"

[views.mock]
rows = 300
"""
CAMPAIGNS = ["c1", "c2"]
PARAMS = AdsParams(publisher="hospital/impressions", advertiser="insurer/conversions",
                   window=7.0, cap=100.0, epsilon=2.0)


def _data(n: int = 4000) -> tuple[str, str, dict[tuple[str, str], int],
                                   dict[tuple[str, str], float]]:
    rng = random.Random(7)
    imps, convs = ["user_id,campaign,group,t0"], ["user_id,t1,value"]
    truth: dict[tuple[str, str], int] = {}
    value_truth: dict[tuple[str, str], float] = {}
    for uid in range(1, n + 1):
        c, g, t0 = rng.choice(CAMPAIGNS), rng.choice(["test", "control"]), rng.randint(0, 50)
        imps.append(f"{uid},{c},{g},{t0}")
        if rng.random() < (0.5 if g == "test" else 0.3):
            t1 = t0 + rng.randint(-3, 12)
            value = rng.randint(1, 150)
            convs.append(f"{uid},{t1},{value}")
            if 0 < t1 - t0 <= PARAMS.window:
                truth[(c, g)] = truth.get((c, g), 0) + 1
                value_truth[(c, g)] = value_truth.get((c, g), 0) + min(value, PARAMS.cap)
    return "\n".join(imps) + "\n", "\n".join(convs) + "\n", truth, value_truth


def _upload(client: Any, tmp: Path, name: str, text: str, cats: str) -> None:
    path = tmp / f"{name}.csv"
    path.write_text(text)
    client.upload(name, path, policy=POLICY.format(cats=cats), policy_format="toml")


@pytest.mark.slow
def test_ads_template_is_released_by_the_executor_and_charged(live_server: Any,
                                                              tmp_path: Path) -> None:
    w = make_world(live_server)
    imps, convs, truth, value_truth = _data()
    _upload(w.hospital, tmp_path, "impressions", imps,
            '{ campaign = ["c1", "c2"], group = ["test", "control"] }')
    _upload(w.insurer, tmp_path, "conversions", convs, "{}")

    # The files `veil job template` writes, submitted as they are.
    files = {"ads_measurement.ipynb": notebook(PARAMS), PINNED_PLANS_FILE: pin_plans(plans(PARAMS))}
    job = w.researcher.submit(files, entrypoint="ads_measurement.ipynb",
                              inputs=[PARAMS.publisher, PARAMS.advertiser], outputs=list(OUTPUTS))
    for provider in (w.hospital, w.insurer):
        provider.approve(job["id"], job["digest"])
    done = wait(w.researcher, job["id"], FINAL)
    assert done["state"] == "released", (done["result"], done["transitions"][-1])
    outs = {o["name"]: o for o in done["outputs"]}
    assert {o["status"] for o in outs.values()} == {"released"}
    left = outs["value"]["meta"]["budget_left"]
    # 4, less 1 for each figure, less the join keys' DP counts (its keys and the overlap).
    views = {b["dataset"]: b["views_epsilon"] for b in w.researcher.budgets()}
    assert views[PARAMS.publisher] == {"joinkeys": pytest.approx(0.2, abs=1e-6)}
    assert left[PARAMS.publisher]["epsilon"] == pytest.approx(4.0 - 2.0 - 0.2, abs=1e-6)

    counts = json.loads(w.researcher.output(job["id"], "conversions"))
    values = json.loads(w.researcher.output(job["id"], "value"))
    assert counts["epsilon"] == values["epsilon"] == pytest.approx(1.0)
    got = {(r["campaign"], r["group"]): r["count"] for r in counts["value"]}
    assert set(got) == set(truth)
    for key, n in truth.items():  # discrete Laplace, scale 1/eps = 1: 15 is far in the tail
        assert abs(got[key] - n) <= 15, (key, got[key], n)
    sums = {(r["campaign"], r["group"]): r["sum"] for r in values["value"]}
    for key, v in value_truth.items():  # clamped to [0, 100], scale 100 at eps 1
        assert abs(sums[key] - v) <= 1500, (key, sums[key], v)
    # Lift is post-processing of the DP figures: test converts more than control here.
    assert got[("c1", "test")] > got[("c1", "control")]


def test_template_notebook_publishes_exactly_the_pinned_plans_in_stage_one(
        live_server: Any, tmp_path: Path) -> None:
    """Stage 1 runs the template on the views; its plans are the ones pinned at submission."""
    import nbformat

    import veil.sdk

    w = make_world(live_server)
    imps, convs, _, _ = _data(300)
    _upload(w.hospital, tmp_path, "impressions", imps,
            '{ campaign = ["c1", "c2"], group = ["test", "control"] }')
    _upload(w.insurer, tmp_path, "conversions", convs, "{}")
    veil.sdk.connect(live_server.url, w.researcher.token)
    published: dict[str, Any] = {}
    try:
        space: dict[str, Any] = {}
        cells = nbformat.reads(notebook(PARAMS).decode(), as_version=4).cells
        source = "\n".join(c.source for c in cells)
        source = source.replace("veil.publish(", "_publish(")
        space["_publish"] = lambda name, q: published.__setitem__(name, q)
        exec(compile(source, "ads.ipynb", "exec"), space)
    finally:
        veil.sdk._client = None
    pinned = plans(PARAMS)
    assert set(published) == set(pinned)
    for name, q in published.items():
        assert q.plan == pinned[name]
        assert q.value is not None  # evaluated on the views in stage 1


def test_cli_writes_the_template_and_its_pinned_plans(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from veil.cli import app
    from veil.privacy.plans import parse_pinned

    out = tmp_path / "job"
    args = ["job", "template", "ads-measurement", "-o", str(out), "--publisher",
            PARAMS.publisher, "--advertiser", PARAMS.advertiser, "--window", "7",
            "--cap", "100", "--epsilon", "2", "--campaign", "c1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    pinned = parse_pinned((out / "veil.plans.json").read_bytes())
    wanted = AdsParams(publisher=PARAMS.publisher, advertiser=PARAMS.advertiser, window=7.0,
                       cap=100.0, epsilon=2.0, campaigns=("c1",))
    assert pinned == plans(wanted)
    assert (out / "ads_measurement.ipynb").read_bytes() == notebook(wanted)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--epsilon", "0", "epsilon must be positive"),
    ("--window", "-1", "window must be positive"),
    ("--publisher", "no-owner", "dataset"),
])
def test_cli_refuses_bad_parameters_and_writes_nothing(tmp_path: Path, flag: str, value: str,
                                                       message: str) -> None:
    from typer.testing import CliRunner

    from veil.cli import app

    out = tmp_path / "job"
    args = ["job", "template", "ads-measurement", "-o", str(out), "--publisher",
            PARAMS.publisher, "--advertiser", PARAMS.advertiser, flag, value]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert not out.exists()
