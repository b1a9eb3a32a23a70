"""The sidebar's backend through a real `veil lab` (Jupyter server) and a real Veil server."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.cleanroom.helpers import claims_csv, make_world, notebook, upload_csv, visits_csv
from veil.jobs.bundle import make_bundle

ANALYSIS = notebook(
    "import veil\nv = veil.load('hospital/visits')\nc = veil.load('insurer/claims')",
    "veil.publish('rows', int(len(v.merge(c, on='patient_id'))))",
)


def test_sidebar_routes(live_server, lab_factory, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv())
    upload_csv(w.insurer, tmp_path, "claims", claims_csv())
    root = tmp_path / "work"
    root.mkdir()
    (root / "analysis.ipynb").write_bytes(ANALYSIS)
    (tmp_path / "outside.ipynb").write_bytes(ANALYSIS)
    lab = lab_factory(live_server.url, w.researcher.token, root)

    # Jupyter's own authentication guards every route: no token, no answer.
    anonymous = httpx.get(f"{lab.url}/veil/datasets", timeout=30)
    assert anonymous.status_code in (302, 403)
    assert httpx.post(f"{lab.url}/veil/submit", json={"path": "analysis.ipynb"},
                      timeout=30).status_code == 403

    status = lab.get("/veil/status").json()
    assert status["user"] == "carol" and status["role"] == "consumer"
    datasets = lab.get("/veil/datasets").json()["datasets"]
    by_name = {d["name"]: d for d in datasets}
    assert set(by_name) == {"hospital/visits", "insurer/claims"}
    assert "mock" in by_name["hospital/visits"]["views"]
    assert {c["name"] for c in by_name["hospital/visits"]["columns"]} == {
        "patient_id", "region", "cost"}
    assert w.researcher.token not in lab.get("/veil/datasets").text

    inspected = lab.post("/veil/inspect", {"path": "analysis.ipynb"}).json()
    assert inspected["inputs"] == ["hospital/visits", "insurer/claims"]
    preflight = inspected["preflight"]  # run on the views in the sandbox, nothing charged
    assert preflight["ok"] and not preflight["charged"] and not preflight["released"]
    runtime = w.researcher._json("GET", "/runtime")["runtime"]
    expected = make_bundle({"analysis.ipynb": ANALYSIS}, entrypoint="analysis.ipynb",
                           inputs=["hospital/visits", "insurer/claims"], runtime=runtime)
    assert inspected["digest"] == expected.digest  # what the providers will be asked to approve

    # Bad input: a clear error, nothing submitted.
    for body, message in (({"path": "../outside.ipynb"}, "outside the workspace"),
                          ({"path": "missing.ipynb"}, "no such file"),
                          ({"path": "analysis.ipynb", "inputs": "x"}, "list of dataset"),
                          ({"path": "analysis.ipynb", "digest": "sha256:" + "0" * 64},
                           "changed since its digest was shown")):
        response = lab.post("/veil/submit", body)
        assert response.status_code == 422 and message in response.json()["error"], body
    bad_json = httpx.post(f"{lab.url}/veil/inspect", content=b"[1", timeout=30,
                          headers={"Authorization": f"token {lab.token}"})
    assert bad_json.status_code == 422
    assert w.researcher.jobs() == []

    job = lab.post("/veil/submit", {"path": "analysis.ipynb",
                                    "digest": inspected["digest"]}).json()
    assert job["state"] == "pending_approval" and job["digest"] == inspected["digest"]
    assert job["awaiting_approval"] == ["hospital", "insurer"]
    jobs = lab.get("/veil/jobs").json()["jobs"]
    assert [j["id"] for j in jobs] == [job["id"]]

    # Download before anything was released: refused with the server's reason.
    early = lab.post(f"/veil/jobs/{job['id']}/download")
    assert early.status_code == 404 and "no final attestation" in early.json()["error"]
    assert lab.get(f"/veil/jobs/{job['id']}/verdict").status_code == 422
    assert lab.get("/veil/jobs/..%2F..%2Fetc/verdict").status_code == 404
