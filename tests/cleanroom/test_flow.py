"""The two-stage flow end to end over HTTP: upload, view, submit, approve, run, release."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from tests.cleanroom.helpers import (
    FINAL,
    aggregate_query,
    claims_csv,
    make_world,
    notebook,
    upload_csv,
    visits_csv,
    wait,
)

ANALYSIS = notebook(
    "import veil\nv = veil.load('hospital/visits')\nc = veil.load('insurer/claims')",
    "t = veil.aggregate(veil.dp.join(v, c, on='patient_id'), by='region',\n"
    "                   n=('patient_id', 'count_distinct'), amount=('amount', 'mean'))",
    "veil.publish('by_region', t)\n"
    "veil.publish('rows', int(len(v.merge(c, on='patient_id'))))",
)
BY_REGION = aggregate_query(["hospital/visits", "insurer/claims"], ["region"],
                            join_on="patient_id",
                            n={"fn": "count_distinct", "column": "patient_id"},
                            amount={"fn": "mean", "column": "amount"})


def test_full_two_stage_flow(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    info = upload_csv(w.hospital, tmp_path, "visits", visits_csv())
    assert info["rows"] == 300 and "mock" in info["views"] and "sample" in info["views"]
    upload_csv(w.insurer, tmp_path, "claims", claims_csv())

    kind, data = w.researcher.view("hospital/visits")
    view = pd.read_parquet(io.BytesIO(data))
    assert kind in ("sample", "mock") and len(view) < 300

    job = w.researcher.submit({"a.ipynb": ANALYSIS}, entrypoint="a.ipynb",
                              inputs=["hospital/visits", "insurer/claims"],
                              outputs=["by_region", "rows"], plans={"by_region": BY_REGION})
    assert job["state"] == "pending_approval"
    w.hospital.approve(job["id"], job["digest"])
    assert w.researcher.job(job["id"])["state"] == "pending_approval"
    w.insurer.approve(job["id"], job["digest"])
    job = wait(w.researcher, job["id"], FINAL)
    assert job["state"] == "output_review", job
    outputs = {o["name"]: o for o in job["outputs"]}
    assert outputs["by_region"]["status"] == "released"
    assert outputs["by_region"]["kind"] == "aggregate"  # computed by the release executor
    assert outputs["rows"]["status"] == "pending_review"
    w.hospital.review_output(job["id"], "rows", "approve")
    job = w.insurer.review_output(job["id"], "rows", "approve")
    assert job["state"] == "released"
    table = pd.read_parquet(io.BytesIO(w.researcher.output(job["id"], "by_region")))
    assert table["n"].sum() == 150
    assert w.researcher.output(job["id"], "rows") == b'{"value": 150}'
    states = [t["to"] for t in w.researcher.job(job["id"])["transitions"]]
    assert states == ["submitted", "pending_approval", "approved", "running", "output_review",
                      "released"]


@pytest.mark.slow
def test_synthetic_view_shows_consumers_only_its_dp_cost(live_server, tmp_path: Path) -> None:
    from tests.cleanroom.helpers import policy

    w = make_world(live_server)
    path = tmp_path / "v.csv"
    path.write_text(visits_csv(400))
    doc = policy() + ("\n[views.synthetic]\nepsilon = 1.0\nrows = 300\n"
                      "bounds = { patient_id = [0, 500], cost = [0, 600] }\n")
    w.hospital.upload("visits", path, policy=doc, policy_format="toml")
    kind, data = w.researcher.view("hospital/visits")
    assert kind == "synthetic" and len(pd.read_parquet(io.BytesIO(data))) == 300
    consumer_info = w.researcher.dataset("hospital/visits")["view_info"]["synthetic"]
    assert consumer_info["dp"]["epsilon"] <= 1.0 and "fidelity" not in consumer_info
    owner_info = w.hospital.dataset("hospital/visits")["view_info"]["synthetic"]
    # The privacy unit's id is not fitted (it carries nothing a model keeps).
    assert set(owner_info["fidelity"]["columns"]) == {"region", "cost"}
