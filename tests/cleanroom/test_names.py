"""Names end to end: what the grammars accept works all the way, what they refuse is a 422."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.cleanroom.helpers import FINAL, make_world, notebook, upload_csv, visits_csv, wait
from veil.sdk.client import ApiError


def test_mixed_case_bundle_files_and_outputs_are_released(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv())
    files = {"Untitled.ipynb": notebook("import veil", "veil.publish('Total', 1)"),
             "Helpers.py": b"TOTAL = 1\n"}
    job = w.researcher.submit(files, entrypoint="Untitled.ipynb", inputs=["hospital/visits"],
                              outputs=["Total"])
    assert w.hospital.bundle_file(job["id"], "Helpers.py") == files["Helpers.py"]
    w.hospital.approve(job["id"], job["digest"])
    done = wait(w.researcher, job["id"], FINAL)
    assert done["state"] == "output_review", (done["result"], done["transitions"][-1])
    [out] = done["outputs"]
    assert out["name"] == "Total" and out["status"] == "pending_review"
    w.hospital.review_output(job["id"], "Total", "approve")
    assert w.researcher.job(job["id"])["state"] == "released"
    assert json.loads(w.researcher.output(job["id"], "Total")) == {"value": 1}


def test_analysis_py_entrypoint_is_accepted(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv())
    job = w.researcher.submit({"Analysis.py": b"import veil\n"}, entrypoint="Analysis.py",
                              inputs=["hospital/visits"])
    assert job["state"] == "pending_approval"


def _status(call) -> int:
    with pytest.raises(ApiError) as info:
        call()
    return info.value.status


def test_names_with_a_trailing_newline_are_refused(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv())
    admin = w.admin
    assert _status(lambda: admin.create_party("evil\n")) == 422
    assert _status(lambda: admin.create_user("eve\n", "consumer", "lab")) == 422
    path = tmp_path / "v.csv"
    path.write_text(visits_csv())
    assert _status(lambda: w.hospital.upload("visits2\n", path, policy='consumers = ["lab"]',
                                             policy_format="toml")) == 422
    nb = {"a.ipynb": notebook("import veil")}
    assert _status(lambda: w.researcher.submit(
        nb, entrypoint="a.ipynb", inputs=["hospital/visits"], outputs=["n\n"])) == 422
    assert _status(lambda: w.researcher.submit(
        nb, entrypoint="a.ipynb", inputs=["hospital/visits\n"])) == 422
    assert _status(lambda: w.researcher.submit(
        {"a.ipynb\n": nb["a.ipynb"]}, entrypoint="a.ipynb\n", inputs=["hospital/visits"])) == 422


@pytest.mark.parametrize("consumer", ["Lab", "lab@example.org", "acme/lab", "x" * 65, "lab\n"])
def test_a_policy_naming_an_impossible_consumer_is_refused(live_server, consumer: str) -> None:
    w = make_world(live_server)
    response = httpx.post(f"{live_server.url}/api/v1/datasets",
                          headers={"Authorization": f"Bearer {w.hospital.token}"},
                          json={"name": "visits", "policy_format": "json",
                                "policy": json.dumps({"consumers": [consumer]})})
    assert response.status_code == 422
    assert "consumers.0" in response.json()["detail"]
