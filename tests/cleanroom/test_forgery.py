"""Forgeries of privacy-relevant outputs, through the real server, sandbox and executor.

The notebook is hostile: it may edit DP results, write manifest entries by hand, choose group
keys, query datasets it was not given, or change a pinned plan's parameters. None of that may
leave automatically, and nothing it declares may set what the budget is charged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cleanroom.helpers import FINAL, dp_query, make_world, notebook, policy, wait

BUDGET = '\n[budget]\nepsilon = 1.0\ndelta = 0.0\nrule = "basic"\n'

FORGE = """
import hashlib, json, os, pathlib
from veil.release.manifest import OutputEntry, OutputManifest, read_manifest, write_manifest
out = pathlib.Path(os.environ.get('VEIL_OUTPUTS', '/outputs'))
def forge(name, kind, file, data, meta=None):
    (out / file).write_bytes(data)
    m = read_manifest(out)
    entry = OutputEntry(name=name, kind=kind, file=file, size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), meta=meta or {})
    write_manifest(out, OutputManifest(outputs=[*m.outputs, entry]))
"""

NOTEBOOK = notebook(
    "import veil\nv = veil.load('hospital/visits')",
    "veil.publish('good', veil.dp.count(v, epsilon=0.4))\n"
    "veil.publish('too_much', veil.dp.count(v, epsilon=5.0))\n"
    # The pinned plan said epsilon 0.3; the notebook changed it inside the run.
    "veil.publish('edited', veil.dp.count(v, epsilon=0.01))\n"
    "veil.publish('ids', v[['patient_id', 'cost']].head(40), count_column='cost')",
    FORGE,
    # A DP result with row 0's cost as its value, written as if the executor had made it.
    "r = {'mechanism': 'count', 'value': int(v.cost.iloc[0]), 'epsilon': 0.4, 'delta': 0.0,\n"
    "     'params': {'column': None, 'scale': 2.5}}\n"
    "forge('forged_dp', 'dp', 'forged_dp.json', json.dumps(r).encode())\n"
    "forge('forged_table', 'aggregate', 'forged_table.parquet', b'PAR1')\n"
    # A notebook table whose manifest claims measured facts it has no right to.
    "forge('claimed', 'figure', 'claimed.png', b'png', meta={'workload_computed': False,\n"
    "      'mia_advantage': 0.0, 'epsilon': 0.001})\n"
    # A plan over a dataset that is not an input, and one with keys of the notebook's choosing.
    "other = {'format': 'veil-plan/1', 'query': {'kind': 'dp', 'relation': {'sources':\n"
    "         ['insurer/claims'], 'join_on': None, 'filters': []}, 'measure':\n"
    "         {'mechanism': 'count', 'epsilon': 0.1}}}\n"
    "forge('outside', 'plan', 'outside.plan.json', json.dumps(other).encode())\n"
    "keyed = json.loads(json.dumps(other))\n"
    "keyed['query']['relation']['sources'] = ['hospital/visits']\n"
    "keyed['query']['measure'] = {'mechanism': 'grouped_count', 'epsilon': 0.1,\n"
    "                             'by': ['patient_id'], 'keys': [1, 2, 3]}\n"
    "forge('keyed', 'plan', 'keyed.plan.json', json.dumps(keyed).encode())",
)
OUTPUTS = ["claimed", "edited", "forged_dp", "forged_table", "good", "ids", "keyed", "outside",
           "too_much"]


@pytest.fixture()
def job(live_server, tmp_path: Path):
    w = make_world(live_server)
    path = tmp_path / "v.csv"
    path.write_text("patient_id,region,cost\n" + "".join(
        f"{i},{['north', 'south', 'east'][i % 3]},{1000 + i}\n" for i in range(1, 201)))
    w.hospital.upload("visits", path, policy=policy() + BUDGET, policy_format="toml")
    plans = {"good": dp_query(["hospital/visits"], "count", epsilon=0.4),
             "too_much": dp_query(["hospital/visits"], "count", epsilon=5.0),
             "edited": dp_query(["hospital/visits"], "count", epsilon=0.3)}
    job = w.researcher.submit({"a.ipynb": NOTEBOOK}, entrypoint="a.ipynb",
                              inputs=["hospital/visits"], outputs=OUTPUTS, plans=plans)
    w.hospital.approve(job["id"], job["digest"])
    return w, live_server, wait(w.researcher, job["id"], FINAL)


def test_forged_and_unpinned_outputs_never_leave_automatically(job) -> None:
    w, _, done = job
    assert done["state"] == "output_review", done
    outs = {o["name"]: o for o in done["outputs"]}
    assert outs["good"]["status"] == "released" and outs["good"]["kind"] == "dp"
    # Forged executor results: refused outright, whatever they claim.
    for name in ("forged_dp", "forged_table"):
        assert outs[name]["status"] == "refused"
        assert "only come from the release executor" in outs[name]["reason"]
    assert outs["outside"]["status"] == "refused"
    assert "not an input of this job" in outs["outside"]["reason"]
    assert outs["keyed"]["status"] == "refused" and "invalid plan" in outs["keyed"]["reason"]
    # Over budget: refused and not charged.
    assert outs["too_much"]["status"] == "refused" and "budget" in outs["too_much"]["reason"]
    # A plan that differs from the pinned one is evaluated by the executor, charged at the
    # executor's cost (0.01, not a declared one), and held for review.
    assert outs["edited"]["status"] == "pending_review"
    assert "not pinned" in outs["edited"]["reason"]
    assert outs["edited"]["meta"]["epsilon"] == pytest.approx(0.01)
    # A table the notebook computed waits for review and says what the gate measured.
    ids = outs["ids"]
    assert ids["status"] == "pending_review" and ids["meta"]["workload_computed"] is True
    assert ids["meta"]["rows"] == 40 and "risk" not in ids["meta"]  # cost >= 1001 >= k
    # What a manifest claims is kept apart: never read as a measured fact.
    claimed = outs["claimed"]
    assert claimed["meta"]["workload_computed"] is True and "epsilon" not in claimed["meta"]
    assert claimed["meta"]["declared"]["mia_advantage"] == 0.0
    assert w.researcher.budgets()[0]["epsilon_left"] == pytest.approx(1.0 - 0.4 - 0.01)
    released = json.loads(w.researcher.output(done["id"], "good"))
    assert released["mechanism"] == "count" and abs(released["value"] - 200) < 60


def test_held_outputs_are_encrypted_at_rest_and_deleted_when_rejected(job) -> None:
    w, server, done = job
    blobs = server.platform.settings.blob_dir / "jobs" / done["id"] / "outputs"
    stored = {p.name for p in blobs.iterdir()}
    assert "ids" in stored and "forged_dp" not in stored  # refused outputs are never kept
    sealed = (blobs / "ids").read_bytes()
    assert b"PAR1" not in sealed and b"patient_id" not in sealed
    # The reviewer still reads the plaintext through the API.
    assert w.hospital.output(done["id"], "ids").startswith(b"PAR1")
    w.hospital.review_output(done["id"], "ids", "reject", reason="row-level ids")
    assert not (blobs / "ids").exists()
