"""Attestation-gated key release and the final token, end to end over HTTP with a real swtpm."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.cleanroom.helpers import (
    FINAL,
    aggregate_query,
    claims_csv,
    make_world,
    notebook,
    policy,
    upload_csv,
    visits_csv,
    wait,
)
from veil.privacy.plans import pin_plans
from veil.tee.attestation import swtpm_missing

pytestmark = pytest.mark.skipif(swtpm_missing() is not None, reason=str(swtpm_missing()))

ANALYSIS = notebook(
    "import veil\nv = veil.load('hospital/visits')\nc = veil.load('insurer/claims')",
    "t = veil.aggregate(veil.dp.join(v, c, on='patient_id'), by='region', n='count')",
    "veil.publish('by_region', t)",
)
PLANS = {"by_region": aggregate_query(["hospital/visits", "insurer/claims"], ["region"],
                                      join_on="patient_id", n={"fn": "count"})}

HARDWARE_ONLY = policy() + """
[attestation]
allowed_backends = ["local-sandbox"]
require_hardware_backed = true
"""


def _audit_actions(platform: object, job_id: str) -> list[str]:
    from veil.store.models import AuditEvent

    with platform.db.transaction() as session:  # type: ignore[attr-defined]
        rows = session.execute(select(AuditEvent).where(AuditEvent.subject == job_id)
                               .order_by(AuditEvent.seq)).scalars().all()
        return [r.action for r in rows]


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "veil", "attest", "verify", *args],
                          capture_output=True, text=True, timeout=120)


def test_keys_come_from_the_broker_and_the_token_verifies(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv())
    upload_csv(w.insurer, tmp_path, "claims", claims_csv())
    job = w.researcher.submit({"a.ipynb": ANALYSIS}, entrypoint="a.ipynb",
                              inputs=["hospital/visits", "insurer/claims"],
                              outputs=["by_region"], plans=PLANS)
    w.hospital.approve(job["id"], job["digest"])
    w.insurer.approve(job["id"], job["digest"])
    job = wait(w.researcher, job["id"], FINAL)
    assert job["state"] == "released", job
    att = job["result"]["attestation"]
    # Two for the notebook, two more for the release executor: both go through the broker.
    assert att["key_releases"] == 4 and att["hwmodel"] == "LOCAL_SWTPM"
    assert att["status"] == "warning" and att["hardware_backed"] is False
    assert att["overhead_s"] > 0 and att["key_release_s"] > 0
    actions = _audit_actions(live_server.platform, job["id"])
    assert actions.count("kbs.release.granted") == 4 and "kbs.release.denied" not in actions
    assert "job.plans_executed" in actions

    # The consumer fetches the token (authenticated) and the JWKS (public).
    auth = {"Authorization": f"Bearer {w.researcher.token}"}
    doc = httpx.get(f"{live_server.url}/api/v1/jobs/{job['id']}/attestation", headers=auth).json()
    assert httpx.get(f"{live_server.url}/api/v1/jobs/{job['id']}/attestation").status_code == 401
    outsider = {"Authorization": f"Bearer {w.outsider.token}"}
    assert httpx.get(f"{live_server.url}/api/v1/jobs/{job['id']}/attestation",
                     headers=outsider).status_code == 404
    provider = {"Authorization": f"Bearer {w.hospital.token}"}
    assert httpx.get(f"{live_server.url}/api/v1/jobs/{job['id']}/attestation",
                     headers=provider).json()["token"] == doc["token"]
    jwks = httpx.get(f"{live_server.url}/.well-known/jwks.json").json()
    assert jwks["keys"] and all("d" not in k for k in jwks["keys"])

    (tmp_path / "token.jwt").write_text(doc["token"])
    (tmp_path / "a.ipynb").write_bytes(ANALYSIS)
    (tmp_path / "veil.plans.json").write_bytes(pin_plans(PLANS))
    out = tmp_path / "outputs"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(doc["manifest"]))
    for entry in doc["manifest"]["outputs"]:
        (out / entry["file"]).write_bytes(w.researcher.output(job["id"], entry["name"]))

    ok = _verify(str(tmp_path / "token.jwt"), "--jwks", f"{live_server.url}/.well-known/jwks.json",
                 "--bundle", str(tmp_path / "a.ipynb"),
                 "--bundle", str(tmp_path / "veil.plans.json"), "--outputs", str(out))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VERIFIED" in ok.stdout and "hwmodel=LOCAL_SWTPM" in ok.stdout
    from veil.release.executor import code_digest

    assert f"release_executor={code_digest()}" in ok.stdout  # its code is in the event log

    target = out / doc["manifest"]["outputs"][0]["file"]
    target.write_bytes(target.read_bytes() + b"\0")
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    bad = _verify(str(tmp_path / "token.jwt"), "--jwks", str(tmp_path / "jwks.json"),
                  "--bundle", str(tmp_path / "a.ipynb"),
                  "--bundle", str(tmp_path / "veil.plans.json"), "--outputs", str(out))
    assert bad.returncode == 1 and "DIFFERS" in bad.stdout and "NOT VERIFIED" in bad.stdout


def test_hardware_only_policy_denies_release_and_fails_the_job(live_server,
                                                               tmp_path: Path) -> None:
    w = make_world(live_server)
    path = tmp_path / "visits.csv"
    path.write_text(visits_csv())
    w.hospital.upload("visits", path, policy=HARDWARE_ONLY, policy_format="toml")
    job = w.researcher.submit(
        {"a.py": b"import veil\nv = veil.load('hospital/visits')\n"
                 b"veil.publish('rows', int(len(v)))\n"},
        entrypoint="a.py", inputs=["hospital/visits"])
    w.hospital.approve(job["id"], job["digest"])
    job = wait(w.researcher, job["id"], FINAL)
    assert job["state"] == "failed"
    assert "key release denied for hospital/visits: hardware_required" in job["reason"]
    assert job["outputs"] == []
    actions = _audit_actions(live_server.platform, job["id"])
    assert "kbs.release.denied" in actions and "kbs.release.granted" not in actions
    auth = {"Authorization": f"Bearer {w.researcher.token}"}
    assert httpx.get(f"{live_server.url}/api/v1/jobs/{job['id']}/attestation",
                     headers=auth).status_code == 404


def test_a_job_cannot_ask_for_a_dataset_it_does_not_declare(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv())
    insurer = upload_csv(w.insurer, tmp_path, "claims", claims_csv())
    code = (
        "import json, os\nfrom veil.tee.agent import fetch_dataset_key\n"
        "idx = json.load(open('/inputs/inputs.json'))\n"
        f"fetch_dataset_key(os.environ['VEIL_KEY_AGENT'], dataset_id={insurer['id']!r}, "
        "job=idx['job'], bundle_digest=idx['bundle_digest'])\n"
    )
    job = w.researcher.submit({"a.py": code.encode()}, entrypoint="a.py",
                              inputs=["hospital/visits"])
    w.hospital.approve(job["id"], job["digest"])
    job = wait(w.researcher, job["id"], FINAL)
    assert job["state"] == "failed"
    assert job["reason"].startswith("key release denied for an undeclared dataset: not_an_input")
    assert "kbs.release.granted" not in _audit_actions(live_server.platform, job["id"])


def test_insecure_dev_evidence_never_unlocks_a_key(tmp_path: Path) -> None:
    from tests.conftest import start_server
    from veil.jobs.worker import Worker
    from veil.tee.backends import LocalInsecure
    from veil.tee.sandbox import InsecureSubprocessBackend

    gen = start_server(tmp_path / "home", workers=0, insecure_dev=True)
    server = next(gen)
    try:
        platform = server.platform
        worker = Worker(platform.db, platform.catalog,  # type: ignore[attr-defined]
                        LocalInsecure(InsecureSubprocessBackend()),
                        platform.settings.run_dir,  # type: ignore[attr-defined]
                        attestation=platform.attestation)  # type: ignore[attr-defined]
        w = make_world(server)
        upload_csv(w.hospital, tmp_path, "visits", visits_csv())
        loads = w.researcher.submit({"a.py": b"import veil\nveil.load('hospital/visits')\n"},
                                    entrypoint="a.py", inputs=["hospital/visits"])
        w.hospital.approve(loads["id"], loads["digest"])
        assert worker.run_one()
        job = w.researcher.job(loads["id"])
        assert job["state"] == "failed" and job["insecure"] is True
        assert job["reason"].startswith("key release denied for hospital/visits: ")
        assert job["reason"].split(": ")[1].split()[0] in ("backend_not_allowed",
                                                           "status_insufficient")
        assert "kbs.release.granted" not in _audit_actions(platform, job["id"])
    finally:
        next(gen, None)
