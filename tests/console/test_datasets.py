"""Dataset governance over the API and the console: policy updates, deletion, auto-approval."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from tests.cleanroom.helpers import make_world, notebook, policy, upload_csv, visits_csv
from tests.console.helpers import csrf_of, signin
from veil.sdk.client import ApiError


@pytest.fixture()
def world(live_server, tmp_path: Path):
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv(60))
    return w


def _policy(w, **changes) -> str:
    doc = w.hospital.dataset("hospital/visits")["policy"]
    doc.update(changes)
    return json.dumps(doc)


def test_policy_update_is_validated(world) -> None:
    with pytest.raises(ApiError) as misspelt:
        world.hospital.update_policy("hospital/visits", _policy(world, consumers=["lab", "labb"]),
                                     policy_format="json")
    assert misspelt.value.status == 422 and "no party named 'labb'" in misspelt.value.detail
    with pytest.raises(ApiError) as fixed:
        world.hospital.update_policy("hospital/visits", _policy(world, join_keys=["patient_id"]),
                                     policy_format="json")
    assert fixed.value.status == 422 and "join_keys: fixed once data is uploaded" \
        in fixed.value.detail
    with pytest.raises(ApiError) as unknown:
        world.hospital.update_policy("hospital/visits", _policy(world, colour="red"),
                                     policy_format="json")
    assert unknown.value.status == 422
    with pytest.raises(ApiError) as same:
        world.hospital.update_policy("hospital/visits", _policy(world), policy_format="json")
    assert same.value.status == 409
    with pytest.raises(ApiError) as not_theirs:
        world.insurer.update_policy("hospital/visits", _policy(world), policy_format="json")
    assert not_theirs.value.status in (403, 404)
    assert world.outsider.datasets() == []

    done = world.hospital.update_policy(
        "hospital/visits", _policy(world, consumers=["lab", "other"], min_group_size=8),
        policy_format="json")
    assert any(line.startswith("+") and '"other"' in line for line in done["diff"])
    assert done["dataset"]["policy"]["min_group_size"] == 8
    assert [d["name"] for d in world.outsider.datasets()] == ["hospital/visits"]


def test_console_policy_change_shows_a_diff_before_saving(live_server, world) -> None:
    provider = signin(live_server.url, world.hospital.token)
    dataset_id = world.hospital.dataset("hospital/visits")["id"]
    page = provider.get(f"/provider/datasets/{dataset_id}")
    assert page.status_code == 200 and "patient_id" in page.text
    csrf = csrf_of(page.text)
    proposed = _policy(world, min_group_size=9)
    preview = provider.post(f"/provider/datasets/{dataset_id}/policy",
                            data={"policy": proposed, "policy_format": "json", "csrf": csrf})
    assert preview.status_code == 200
    assert '+  "min_group_size": 9' in html.unescape(preview.text)
    assert world.hospital.dataset("hospital/visits")["policy"]["min_group_size"] == 5
    refused = provider.post(f"/provider/datasets/{dataset_id}/policy",
                            data={"policy": proposed, "policy_format": "json",
                                  "confirm": "yes"})
    assert refused.status_code == 403
    saved = provider.post(f"/provider/datasets/{dataset_id}/policy",
                          data={"policy": proposed, "policy_format": "json", "confirm": "yes",
                                "csrf": csrf})
    assert saved.status_code == 303
    assert world.hospital.dataset("hospital/visits")["policy"]["min_group_size"] == 9
    bad = provider.post(f"/provider/datasets/{dataset_id}/policy",
                        data={"policy": "consumers = [", "policy_format": "toml",
                              "csrf": csrf})
    assert bad.status_code == 422 and "not valid TOML" in bad.text
    # With a budget, the page charts the consumer's spend.
    budgeted = _policy(world, budget={"epsilon": 2.0, "delta": 0.0, "rule": "basic"})
    provider.post(f"/provider/datasets/{dataset_id}/policy",
                  data={"policy": budgeted, "policy_format": "json", "confirm": "yes",
                        "csrf": csrf})
    assert 'aria-label="0 of 2 epsilon charged in 0 charges"' in provider.get(
        f"/provider/datasets/{dataset_id}").text
    # Another provider cannot open it.
    other = signin(live_server.url, world.insurer.token)
    assert other.get(f"/provider/datasets/{dataset_id}").status_code == 404


def test_delete_forgets_data_views_and_key_and_rejects_waiting_jobs(live_server, world,
                                                                    tmp_path) -> None:
    job = world.researcher.submit({"a.ipynb": notebook("import veil")}, entrypoint="a.ipynb",
                                  inputs=["hospital/visits"])
    dataset_id = world.hospital.dataset("hospital/visits")["id"]
    provider = signin(live_server.url, world.hospital.token)
    csrf = csrf_of(provider.get(f"/provider/datasets/{dataset_id}").text)
    wrong = provider.post(f"/provider/datasets/{dataset_id}/delete",
                          data={"confirm_name": "visits", "csrf": csrf})
    assert wrong.status_code == 422 and world.researcher.datasets()
    no_csrf = provider.post(f"/provider/datasets/{dataset_id}/delete",
                            data={"confirm_name": "hospital/visits"})
    assert no_csrf.status_code == 403 and world.researcher.datasets()
    done = provider.post(f"/provider/datasets/{dataset_id}/delete",
                         data={"confirm_name": "hospital/visits", "csrf": csrf})
    assert done.status_code == 303

    assert world.researcher.datasets() == []
    after = world.researcher.job(job["id"])
    assert after["state"] == "rejected" and "deleted" in after["reason"]
    with pytest.raises(ApiError):
        world.researcher.view("hospital/visits")
    shown = world.hospital.dataset("hospital/visits")
    assert shown["status"] == "deleted" and shown["views"] == []
    blobs = Path(live_server.platform.settings.blob_dir)
    assert not [p for p in blobs.rglob("*") if dataset_id in str(p) and p.is_file()]
    with pytest.raises(ApiError) as again:
        world.hospital.delete_dataset("hospital/visits")
    assert again.value.status == 409
    with pytest.raises(ApiError) as reuse:
        upload_csv(world.hospital, tmp_path, "visits", visits_csv(60))
    assert reuse.value.status == 409 and "was deleted" in reuse.value.detail
    audit = signin(live_server.url, world.hospital.token).get("/audit?q=dataset.deleted")
    assert "dataset.deleted" in audit.text and "Hash chain intact" in audit.text


def test_auto_approval_rule_for_a_named_consumer(live_server, world) -> None:
    world.hospital.update_policy(
        "hospital/visits", _policy(world, consumers=["lab", "other"]), policy_format="json")
    files = {"a.ipynb": notebook("import veil\nveil.load('hospital/visits')")}
    first = world.researcher.submit(files, entrypoint="a.ipynb", inputs=["hospital/visits"])
    assert first["state"] == "pending_approval"
    provider = signin(live_server.url, world.hospital.token)
    page = provider.get(f"/provider/jobs/{first['id']}")
    added = provider.post(f"/provider/jobs/{first['id']}/auto-approve",
                          data={"csrf": csrf_of(page.text)})
    assert added.status_code == 200 and "approved automatically when lab submits" in added.text
    approval = world.hospital.dataset("hospital/visits")["policy"]["approval"]
    assert approval == {"mode": "auto", "auto_digests": [],
                        "rules": [{"digest": first["digest"], "consumers": ["lab"]}]}

    again = world.researcher.submit(files, entrypoint="a.ipynb", inputs=["hospital/visits"])
    assert again["state"] == "approved" and again["digest"] == first["digest"]
    assert [(a["party"], a["actor"]) for a in again["approvals"]] == [("hospital", "policy:auto")]
    # The same digest from another consumer party still waits for a person.
    theirs = world.outsider.submit(files, entrypoint="a.ipynb", inputs=["hospital/visits"])
    assert theirs["state"] == "pending_approval"
    # A consumer cannot add rules.
    with pytest.raises(ApiError) as refused:
        world.researcher.auto_approve(first["id"])
    assert refused.value.status == 403


def test_rules_name_existing_consumers(world) -> None:
    doc = json.loads(_policy(world))
    doc["approval"] = {"mode": "auto", "rules": [{"digest": "sha256:" + "a" * 64,
                                                  "consumers": ["nobody"]}]}
    with pytest.raises(ApiError) as refused:
        world.hospital.update_policy("hospital/visits", json.dumps(doc), policy_format="json")
    assert "approval.rules: no party named 'nobody'" in refused.value.detail
    text = policy() + ""
    assert "mode" in text  # the helpers' policy still parses with the new approval fields


def test_console_upload_needs_the_csrf_header(live_server, world) -> None:
    provider = signin(live_server.url, world.hospital.token)
    csrf = csrf_of(provider.get("/provider").text)
    created = provider.post("/provider/datasets", data={
        "name": "claims", "policy": policy(), "policy_format": "toml", "csrf": csrf})
    assert created.status_code == 303
    dataset_id = created.headers["location"].split("/")[-1].split("#")[0]
    page = provider.get(f"/provider/datasets/{dataset_id}")
    assert 'id="upload-form"' in page.text and "/static/console/upload.js" in page.text
    body = visits_csv(80).encode()
    url = f"/provider/datasets/{dataset_id}/data?filename=claims.csv"
    assert provider.put(url, content=body).status_code == 403
    assert provider.put(url, content=body, headers={"X-CSRF-Token": "nope"}).status_code == 403
    bad = provider.put(url, content=b"\x00\x01 not a table",
                       headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 422 and world.hospital.dataset("hospital/claims")["status"] \
        == "draft"
    done = provider.put(url, content=body, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200 and done.json()["rows"] == 80
    assert world.hospital.wait_ready("hospital/claims", timeout_s=120)["status"] == "ready"
    # A consumer's session cannot upload, even with its own valid CSRF token.
    consumer = signin(live_server.url, world.researcher.token)
    theirs = csrf_of(consumer.get("/consumer").text)
    assert consumer.put(url, content=body, headers={"X-CSRF-Token": theirs}).status_code == 403
    refused = provider.post("/provider/datasets", data={
        "name": "x", "policy": "colour = 'red'", "policy_format": "toml", "csrf": csrf})
    assert refused.status_code == 422 and "colour" in refused.text
