"""A job over three providers' datasets: every approval, every key release, the strictest k.

Two-provider flows could hide code that only looks at "the other" provider; with three, the
job must wait for all three approvals, fetch three keys from the broker, and the gate must
apply the largest min_group_size of the three (here the third provider's).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from tests.cleanroom.helpers import (
    FINAL,
    claims_csv,
    make_world,
    notebook,
    upload_csv,
    visits_csv,
    wait,
)
from veil.privacy.plans import parse_plan

ANALYSIS = notebook(
    "import veil\nv = veil.load('hospital/visits')\nc = veil.load('insurer/claims')\n"
    "e = veil.load('registry/enrolment')",
    # 150 joined (odd) ids, all on plan 'b': one group, above every provider's k.
    "j = veil.dp.join(c, e, on='patient_id')\n"
    "veil.publish('by_plan', veil.aggregate(j, by='plan', n='count'))",
    # The same ids in 20 buckets: groups of 7-8, above k=3 and k=5 but below k=12.
    "b = j.derive('bucket', 'bucket', 'patient_id', edges=list(range(15, 300, 15)))\n"
    "veil.publish('by_bucket', veil.aggregate(b, by='bucket', n='count'))",
)
JOINED = {"sources": ["insurer/claims", "registry/enrolment"], "join_on": "patient_id"}
PLANS = {
    "by_plan": parse_plan({"query": {"kind": "aggregate", "relation": JOINED, "by": ["plan"],
                                     "aggregates": {"n": {"fn": "count"}}}}),
    "by_bucket": parse_plan({"query": {"kind": "aggregate", "relation": {**JOINED, "derived": [
        {"name": "bucket", "op": "bucket", "args": ["patient_id"],
         "edges": [float(x) for x in range(15, 300, 15)]}]}, "by": ["bucket"],
        "aggregates": {"n": {"fn": "count"}}}}),
}


def _enrolment_csv(rows: int = 300) -> str:
    lines = ["patient_id,plan"] + [f"{i},{'ab'[i % 2]}" for i in range(1, rows + 1)]
    return "\n".join(lines) + "\n"


def test_a_job_over_three_providers(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    w.admin.create_party("registry")
    registrar = w.admin.with_token(w.admin.create_user("rita", "provider", "registry")["token"])
    upload_csv(w.hospital, tmp_path, "visits", visits_csv(), k=3)
    upload_csv(w.insurer, tmp_path, "claims", claims_csv(), k=5)
    upload_csv(registrar, tmp_path, "enrolment", _enrolment_csv(), k=12)

    inputs = ["hospital/visits", "insurer/claims", "registry/enrolment"]
    job = w.researcher.submit({"a.ipynb": ANALYSIS}, entrypoint="a.ipynb", inputs=inputs,
                              outputs=sorted(PLANS), plans=PLANS)
    for provider in (w.hospital, w.insurer):
        provider.approve(job["id"], job["digest"])
        assert w.researcher.job(job["id"])["state"] == "pending_approval"
    registrar.approve(job["id"], job["digest"])

    done = wait(w.researcher, job["id"], FINAL)
    assert done["state"] == "released", (done["result"], done["transitions"][-1])
    # Three for the notebook, two for the release executor (the plans read two inputs).
    assert done["result"]["attestation"]["key_releases"] == 5
    outputs = {o["name"]: o for o in done["outputs"]}
    assert outputs["by_plan"]["status"] == "released"
    assert outputs["by_plan"]["meta"]["min_group_size"] == 12  # the strictest of the plan's
    refused = outputs["by_bucket"]
    assert refused["status"] == "refused"
    assert "fewer than 12 people" in refused["reason"]

    from veil.store.models import AuditEvent

    with live_server.platform.db.transaction() as session:
        actions = [e.action for e in session.execute(
            select(AuditEvent).where(AuditEvent.subject == job["id"])).scalars()]
    assert actions.count("kbs.release.granted") == 5 and "kbs.release.denied" not in actions
    assert actions.count("job.approve") == 3
