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

ANALYSIS = notebook(
    "import veil\nv = veil.load('hospital/visits')\nc = veil.load('insurer/claims')\n"
    "e = veil.load('registry/enrolment')",
    "j = v.merge(c, on='patient_id').merge(e, on='patient_id')",
    # ~50 rows per region: above every provider's k.
    "coarse = j.groupby('region').agg(n=('patient_id', 'size')).reset_index()\n"
    "veil.publish('by_region', coarse, count_column='n')",
    # 150 joined (odd) ids over 20 buckets: groups of 7-8, above k=3 and k=5 but below k=12.
    "j['bucket'] = j['patient_id'] % 40\n"
    "fine = j.groupby('bucket').agg(n=('patient_id', 'size')).reset_index()\n"
    "veil.publish('by_bucket', fine, count_column='n')",
)


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
    job = w.researcher.submit({"a.ipynb": ANALYSIS}, entrypoint="a.ipynb", inputs=inputs)
    for provider in (w.hospital, w.insurer):
        provider.approve(job["id"], job["digest"])
        assert w.researcher.job(job["id"])["state"] == "pending_approval"
    registrar.approve(job["id"], job["digest"])

    done = wait(w.researcher, job["id"], FINAL)
    assert done["state"] == "released", (done["result"], done["transitions"][-1])
    assert done["result"]["attestation"]["key_releases"] == 3
    outputs = {o["name"]: o for o in done["outputs"]}
    assert outputs["by_region"]["status"] == "released"
    assert outputs["by_region"]["meta"]["min_group_size"] == 12
    refused = outputs["by_bucket"]
    assert refused["status"] == "refused"
    assert "minimum group size 12 required by registry/enrolment" in refused["reason"]

    from veil.store.models import AuditEvent

    with live_server.platform.db.transaction() as session:
        actions = [e.action for e in session.execute(
            select(AuditEvent).where(AuditEvent.subject == job["id"])).scalars()]
    assert actions.count("kbs.release.granted") == 3 and "kbs.release.denied" not in actions
    assert actions.count("job.approve") == 3
