"""The researcher's workspace over the real server: CLI parity (wait, bundle, download --all,
attestation, verify with a rejected output), declared outputs, diagnostics, pre-flight and the
runtime listing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cleanroom.helpers import (
    FINAL,
    World,
    claims_csv,
    dp_query,
    make_world,
    notebook,
    policy,
    upload_csv,
    visits_csv,
    wait,
)
from tests.cleanroom.test_cli import veil

BUDGET = '\n[budget]\nepsilon = 3.0\ndelta = 0.0\nrule = "basic"\n'
LOAD = "import veil\nv = veil.load('hospital/visits')\nc = veil.load('insurer/claims')"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, World, Path]]:
    from tests.conftest import start_server

    tmp = tmp_path_factory.mktemp("workspace")
    gen = start_server(tmp / "home")
    server = next(gen)
    w = make_world(server)
    (tmp / "visits.csv").write_text(visits_csv())
    w.hospital.upload("visits", tmp / "visits.csv", policy=policy() + BUDGET,
                      policy_format="toml")
    upload_csv(w.insurer, tmp, "claims", claims_csv())
    try:
        yield server, w, tmp
    finally:
        next(gen, None)


def _submit(w: World, *cells: str, outputs: list[str], plans: dict | None = None) -> dict:
    return w.researcher.submit({"a.ipynb": notebook(*cells)}, entrypoint="a.ipynb",
                               inputs=["insurer/claims", "hospital/visits"], outputs=outputs,
                               plans=plans)


def test_wait_download_all_verify_with_a_rejected_output(world) -> None:
    server, w, tmp = world
    count = dp_query(["hospital/visits"], "count", epsilon=0.2)
    job = _submit(w, LOAD, "veil.publish('n', veil.dp.count(v, epsilon=0.2))\n"
                           "veil.publish('rows', int(len(v)))\n"
                           "veil.publish('extra', int(len(c)))\n"
                           "veil.publish('undeclared', 7)",
                  outputs=["rows", "n", "extra"], plans={"n": count})
    jid, env = job["id"], {"url": server.url, "token": w.researcher.token}

    pending = veil("job", "wait", jid, "--timeout", "1", **env)
    assert pending.returncode == 3, pending.stderr
    assert "waiting for approval by hospital, insurer" in pending.stdout

    w.hospital.approve(jid, job["digest"])
    w.insurer.approve(jid, job["digest"])
    done = veil("job", "wait", jid, "--timeout", "180", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "output_review — outputs waiting for provider review: extra, rows" in last
    assert "running" in last and "sandbox" in last  # time per state and phase

    outputs = {o["name"]: o for o in w.researcher.job(jid)["outputs"]}
    assert outputs["n"]["status"] == "released"
    assert outputs["undeclared"]["status"] == "refused"  # forgery-style: never reviewed
    assert "not declared at submission" in outputs["undeclared"]["reason"]
    for provider in (w.hospital, w.insurer):
        provider.review_output(jid, "rows", "approve")
    w.hospital.review_output(jid, "extra", "reject", "too specific")
    assert w.researcher.job(jid)["state"] == "released"

    folder = tmp / "all"
    got = veil("job", "download", jid, "--all", "-o", str(folder), **env)
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "attestation.json", "manifest.json", "n.json", "rows.json", "token.jwt"]
    summary = json.loads((folder / "attestation.json").read_text())
    assert summary["outputs"]["extra"] == "rejected" and summary["digest"] == job["digest"]

    verified = veil("attest", "verify", str(folder / "token.jwt"), "--jwks",
                    server.url + "/.well-known/jwks.json", "--outputs", str(folder))
    assert verified.returncode == 0, verified.stdout
    assert "VERIFIED" in verified.stdout and "NOT VERIFIED" not in verified.stdout
    assert "output extra: not released" in verified.stdout
    assert "PASS output n" in verified.stdout and "PASS output rows" in verified.stdout
    (folder / "rows.json").write_text('{"value": 1}')  # a changed file still fails
    tampered = veil("attest", "verify", str(folder / "token.jwt"), "--jwks",
                    server.url + "/.well-known/jwks.json", "--outputs", str(folder))
    assert tampered.returncode == 1 and "FAIL output rows" in tampered.stdout

    att = veil("job", "attestation", jid, "-o", str(tmp / "t.jwt"), **env)
    assert att.returncode == 0 and "PASS signature and time" in att.stdout, att.stdout
    assert f"bundle={job['digest']}" in att.stdout and "output n: dp" in att.stdout
    assert (tmp / "t.jwt").read_text().strip() == (folder / "token.jwt").read_text().strip()

    bundle_dir = tmp / "bundle"
    fetched = veil("job", "bundle", jid, "-o", str(bundle_dir),
                   url=server.url, token=w.hospital.token)  # a provider reads what it approves
    assert fetched.returncode == 0, fetched.stderr
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["a.ipynb", "veil.plans.json"]
    from veil.jobs.bundle import make_bundle

    files = {p.name: p.read_bytes() for p in bundle_dir.iterdir()}
    again = make_bundle(files, entrypoint="a.ipynb", inputs=["hospital/visits", "insurer/claims"],
                        outputs=["extra", "n", "rows"], runtime=w.researcher.bundle(jid)["runtime"])
    assert again.digest == job["digest"]
    assert veil("job", "bundle", jid, "-o", str(tmp / "b2"), url=server.url,
                token=w.outsider.token).returncode == 1


def test_a_failed_run_says_what_and_where_but_no_data(world) -> None:
    _, w, _ = world
    job = _submit(w, LOAD, "x = 1\nimport sklearnx", outputs=[])
    for provider in (w.hospital, w.insurer):
        provider.approve(job["id"], job["digest"])
    done = wait(w.researcher, job["id"], FINAL)
    assert done["state"] == "failed"
    assert done["reason"].startswith("notebook raised ModuleNotFoundError in cell 2, line 2: "
                                     "no module named 'sklearnx'")
    assert (done["result"]["cell"], done["result"]["line"]) == (2, 2)

    job = _submit(w, LOAD, "first = str(v['patient_id'].iloc[0])\n"
                           "raise ValueError('patient ' + first + ' region ' + v['region'][0])",
                  outputs=[])
    for provider in (w.hospital, w.insurer):
        provider.approve(job["id"], job["digest"])
    done = wait(w.researcher, job["id"], FINAL)
    assert done["reason"] == "notebook raised ValueError in cell 2, line 2"
    assert done["result"]["message"] is None


WARDS = [f"w{i:02d}" for i in range(60)]
WARDS_POLICY = f"""\
consumers = ["lab"]
min_group_size = 20
categories = {{ ward = {json.dumps(WARDS)} }}

[privacy_unit]
id_column = "patient_id"
max_contributions = 1

[approval]
mode = "manual"

[views.sample]
publishable = true
fraction = 1.0

[budget]
epsilon = 3.0
delta = 0.0
rule = "basic"
"""
PREFLIGHT_NB = notebook(
    "import veil\nw = veil.load('hospital/wards')",
    "veil.publish('by_ward', veil.aggregate(w, by='ward', n=('patient_id', 'count_distinct')))\n"
    "veil.publish('big', veil.dp.count(w, epsilon=5.0))\n"
    "veil.publish('n', veil.dp.count(w, epsilon=1.0))\n"
    "veil.publish('rows', int(len(w)))\n"
    "veil.publish('stray', 1)")


def _wards(w: World, tmp: Path) -> None:
    """58 wards of 5 patients and 2 of 100: the issue's 58-small-groups table."""
    lines = ["patient_id,ward,cost"]
    pid = 0
    for i, ward in enumerate(WARDS):
        for _ in range(5 if i < 58 else 100):
            pid += 1
            lines.append(f"{pid},{ward},{pid % 97}")
    (tmp / "wards.csv").write_text("\n".join(lines) + "\n")
    w.hospital.upload("wards", tmp / "wards.csv", policy=WARDS_POLICY, policy_format="toml")


def test_preflight_previews_the_gate_and_charges_nothing(world) -> None:
    from tests.cleanroom.helpers import aggregate_query

    server, w, tmp = world
    _wards(w, tmp)
    plans = {"by_ward": aggregate_query(["hospital/wards"], ["ward"],
                                        n={"fn": "count_distinct", "column": "patient_id"}),
             "big": dp_query(["hospital/wards"], "count", epsilon=5.0),
             "n": dp_query(["hospital/wards"], "count", epsilon=1.0)}
    budgets_before, jobs_before = w.researcher.budgets(), w.researcher.jobs()
    report = w.researcher.preflight({"a.ipynb": PREFLIGHT_NB}, entrypoint="a.ipynb",
                                    inputs=["hospital/wards"],
                                    outputs=["by_ward", "big", "n", "rows"], plans=plans)
    assert report["ok"] and report["error"] is None, report["error"]
    assert report["views"] == {"hospital/wards": "sample"} and report["run_s"] > 0
    assert (report["charged"], report["released"]) == (False, False)
    out = {o["name"]: o for o in report["outputs"]}
    assert out["by_ward"]["verdict"] == "refused"
    assert "58 of 60 groups have fewer than 20 people" in out["by_ward"]["reason"]
    assert out["big"]["verdict"] == "refused" and out["big"]["epsilon"] == 5.0
    assert out["big"]["reason"] == ("budget exhausted on hospital/wards: output needs epsilon "
                                    "5, 3 left")
    assert out["n"]["verdict"] == "auto-release" and out["n"]["epsilon"] == 1.0
    assert out["rows"]["verdict"] == "review"
    assert out["stray"]["verdict"] == "refused" and "not declared" in out["stray"]["reason"]
    [budget] = report["budgets"]
    assert budget == {"dataset": "hospital/wards", "epsilon_needed": 6.0, "delta_needed": 0.0,
                      "epsilon_left": 3.0, "delta_left": 0.0, "fits": False, "rule": "basic"}
    # nothing charged, no job made, nothing released; the run is in the audit log
    assert w.researcher.budgets() == budgets_before and w.researcher.jobs() == jobs_before
    from sqlalchemy import select

    from veil.store.models import AuditEvent

    with server.platform.db.transaction() as session:
        actions = session.execute(select(AuditEvent.action).where(
            AuditEvent.subject == report["digest"])).scalars().all()
    assert actions == ["job.preflight"]

    unpinned = w.researcher.preflight({"a.ipynb": PREFLIGHT_NB}, entrypoint="a.ipynb",
                                      inputs=["hospital/wards"], outputs=["n", "big"])
    verdicts = {o["name"]: o["verdict"] for o in unpinned["outputs"]}
    assert verdicts["n"] == "review" and verdicts["by_ward"] == "refused"

    nb = tmp / "pf.ipynb"
    nb.write_bytes(PREFLIGHT_NB)
    got = veil("job", "preflight", str(nb), "-i", "hospital/wards", "--output", "n",
               url=server.url, token=w.researcher.token)
    assert got.returncode == 1, got.stderr  # an output would be refused
    assert "auto-release" not in got.stdout or "n (plan" not in got.stdout
    assert "refused by_ward" in " ".join(got.stdout.split())
    assert "budget hospital/wards: ε needed" in got.stdout


def test_preflight_reports_diagnostics_and_authorises(world) -> None:
    from veil.sdk.client import ApiError

    _, w, _ = world
    report = w.researcher.preflight(
        {"a.ipynb": notebook("import veil\nv = veil.load('hospital/visits')", "print(totl)")},
        entrypoint="a.ipynb", inputs=["hospital/visits"])
    assert not report["ok"] and report["outputs"] == []
    assert report["error"]["reason"] == ("notebook raised NameError in cell 2, line 1: name "
                                         "'totl' is not defined")
    for caller in (w.hospital, w.outsider):  # a provider; a consumer not in the policy
        with pytest.raises(ApiError) as info:
            caller.preflight({"a.ipynb": notebook("import veil")}, entrypoint="a.ipynb",
                             inputs=["hospital/visits"])
        assert info.value.status == 403
    with pytest.raises(ApiError) as info:
        w.researcher.preflight({"a.ipynb": b"{not json"}, entrypoint="a.ipynb",
                               inputs=["hospital/visits"])
    assert info.value.status == 422


def test_runtime_lists_packages_and_launches_measure_them(world) -> None:
    from veil.sdk.client import ApiError
    from veil.sdk.verify import verify_token

    server, w, _ = world
    info = w.researcher.runtime()
    names = {p["name"]: p["version"] for p in info["packages"]}
    assert {"pandas", "numpy", "scikit-learn", "opendp", "veil"} <= set(names)
    assert info["runtime"].startswith("veil-runtime/") and info["packages_digest"].startswith(
        "sha256:")
    listed = veil("runtime", "scikit", url=server.url, token=w.researcher.token)
    assert listed.returncode == 0 and f"scikit-learn  {names['scikit-learn']}" in listed.stdout
    assert info["packages_digest"] in listed.stdout
    with pytest.raises(ApiError) as denied:
        server.client().runtime()  # no token: refused
    assert denied.value.status == 401

    job = _submit(w, LOAD, "veil.publish('rows', int(len(v)))", outputs=["rows"])
    for provider in (w.hospital, w.insurer):
        provider.approve(job["id"], job["digest"])
    assert wait(w.researcher, job["id"], FINAL)["state"] == "output_review"
    claims = verify_token(w.researcher.attestation(job["id"])["token"],
                          w.researcher.jwks()).claims
    assert claims["submods"]["runtime"]["packages"] == info["packages_digest"]
