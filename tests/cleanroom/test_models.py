"""Models as outputs through the real server, sandbox and executor.

A pinned DP training plan leaves as a charged ``dp_model``; a DP model the notebook wrote by
hand is refused; a model the notebook trained itself waits for review with the executor's
membership audit, or is refused when the audit exceeds the policy's ``max_mia_advantage``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cleanroom.helpers import FINAL, make_world, notebook, policy, wait
from veil.privacy.model_io import load_model
from veil.privacy.plans import parse_plan
from veil.privacy.training import DPModel

LIMIT = "max_mia_advantage = 0.3\n"  # a top-level key: before the policy's tables
BUDGET = '\n[budget]\nepsilon = 3.0\ndelta = 1e-4\nrule = "basic"\n'
BOUNDS = {"age": [0.0, 100.0], "cost": [0.0, 1000.0]}
TRAIN = {"query": {"kind": "train", "relation": {"sources": ["hospital/visits"]},
                   "model": "logistic_regression", "features": ["age", "cost"],
                   "label": "sick", "bounds": BOUNDS, "epsilon": 1.0, "delta": 1e-5}}

NOTEBOOK = notebook(
    "import veil, json, hashlib, pathlib, os\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "from sklearn.tree import DecisionTreeClassifier\n"
    "v = veil.load('hospital/visits')",
    "veil.publish('dp', veil.dp.logistic_regression(v, ['age', 'cost'], 'sick',\n"
    "    bounds={'age': (0.0, 100.0), 'cost': (0.0, 1000.0)}, epsilon=1.0, delta=1e-5))\n"
    "veil.publish('linear', LogisticRegression().fit(v[['age', 'cost']], v.sick),\n"
    "             trained_on=v, label='sick')\n"
    "veil.publish('tree', DecisionTreeClassifier().fit(v[['age', 'noise']], v.coin),\n"
    "             trained_on=v, label='coin')",
    # A DP model written by hand, with the first patient's cost as its intercept.
    "from veil.release.manifest import OutputEntry, OutputManifest, read_manifest, "
    "write_manifest\n"
    "out = pathlib.Path('/outputs')\n"
    "doc = {'format': 'veil-dp-model/1', 'model': 'logistic_regression', 'features': ['age'],\n"
    "       'label': 'sick', 'coef': [0.0], 'intercept': float(v.cost.iloc[0]),\n"
    "       'epsilon': 0.1, 'delta': 1e-5, 'params': {}}\n"
    "data = json.dumps(doc).encode()\n"
    "(out / 'forged.model.json').write_bytes(data)\n"
    "m = read_manifest(out)\n"
    "e = OutputEntry(name='forged', kind='dp_model', file='forged.model.json',\n"
    "                size=len(data), sha256=hashlib.sha256(data).hexdigest())\n"
    "write_manifest(out, OutputManifest(outputs=[*m.outputs, e]))",
)


@pytest.fixture()
def done(live_server, tmp_path: Path):
    w = make_world(live_server)
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 90, 600)
    cost = rng.uniform(0, 1000, 600)
    sick = (age / 100 + rng.normal(0, 0.15, 600) > 0.55).astype(int)
    lines = ["patient_id,region,age,cost,noise,sick,coin"] + [
        f"{i},north,{age[i]:.2f},{cost[i]:.2f},{rng.normal():.4f},{sick[i]},{rng.integers(2)}"
        for i in range(600)]
    path = tmp_path / "v.csv"
    path.write_text("\n".join(lines) + "\n")
    w.hospital.upload("visits", path, policy=LIMIT + policy() + BUDGET, policy_format="toml")
    job = w.researcher.submit({"a.ipynb": NOTEBOOK}, entrypoint="a.ipynb",
                              inputs=["hospital/visits"],
                              outputs=["dp", "linear", "tree", "forged"],
                              plans={"dp": parse_plan(TRAIN)})
    w.hospital.approve(job["id"], job["digest"])
    return w, wait(w.researcher, job["id"], FINAL, timeout=300)


def test_models_leave_only_as_dp_plans_or_through_review_with_their_audit(done) -> None:
    w, job = done
    assert job["state"] == "output_review", job
    outs = {o["name"]: o for o in job["outputs"]}
    # The pinned DP training plan: trained by the executor, charged, released.
    dp = outs["dp"]
    assert dp["kind"] == "dp_model" and dp["status"] == "released", dp
    assert dp["meta"]["epsilon"] == pytest.approx(1.0) and dp["meta"]["delta"] == 1e-5
    model = DPModel.from_json(json.loads(w.researcher.output(job["id"], "dp")))
    assert model.features == ["age", "cost"] and model.coef[0] > 0  # older: sicker
    assert w.researcher.budgets()[0]["epsilon_left"] == pytest.approx(2.0)
    # Forged by the notebook: refused outright.
    assert outs["forged"]["status"] == "refused"
    assert "only come from the release executor" in outs["forged"]["reason"]
    # Trained by the notebook: reviewed, with what the executor read and measured.
    linear = outs["linear"]
    assert linear["kind"] == "model" and linear["status"] == "pending_review", linear
    meta = linear["meta"]
    assert meta["feature_names"] == ["age", "cost"] and meta["n_features"] == 2
    assert meta["model_type"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert meta["mia_advantage"] < 0.3 and "executor_clone" in meta["audit"]
    assert 0 <= meta["audit"]["executor_clone"]["lira_tpr_at_1pct_fpr"] <= 1
    reviewed = load_model(w.hospital.output(job["id"], "linear"), "skops")
    assert reviewed.predict(pd.DataFrame({"age": [80.0], "cost": [10.0]})).tolist() == [1]
    # A tree memorising coin flips: the audit sees it and the policy refuses it.
    tree = outs["tree"]
    assert tree["status"] == "refused", tree
    assert "exceeds hospital/visits's max_mia_advantage 0.3" in tree["reason"]
