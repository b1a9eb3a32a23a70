"""DP-SGD of an exported JAX model through the real server, sandbox and executor.

A pinned DP-SGD plan leaves as a charged ``dp_model`` (also when ``veil.dp.train`` exports the
loss inside the sandbox); its noise multiplier changed inside the run is charged at the
executor's cost and held; a plan whose exported loss calls back into
the host is refused by the executor's check; a DP-SGD model the notebook wrote is refused.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from tests.cleanroom.helpers import FINAL, make_world, notebook, policy, wait
from veil.privacy import dpsgd as S
from veil.privacy.plans import PlanDocument, parse_plan

pytestmark = pytest.mark.filterwarnings("ignore:optax.global_norm is deprecated")

BUDGET = '\n[budget]\nepsilon = 20.0\ndelta = 1e-4\nrule = "basic"\n'
INIT = {"w1": np.random.default_rng(0).normal(0, 0.5, (2, 4)).astype(np.float32),
        "b1": np.zeros(4, np.float32), "w2": np.full((4, 1), 0.1, np.float32),
        "b2": np.zeros(1, np.float32)}


def loss(p: Any, x: Any, y: Any) -> Any:
    z = (jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])[0]
    return jnp.logaddexp(0.0, z) - y * z


def callback_loss() -> bytes:
    """A loss that calls into the host, serialized as a hostile notebook can."""

    @jax.custom_jvp
    def leak(y: Any) -> Any:
        return jax.ffi.ffi_call("xla_ffi_python_cpu_callback",
                                jax.ShapeDtypeStruct((), jnp.float32))(y)

    @leak.defjvp
    def _(primals: Any, tangents: Any) -> Any:
        return leak(primals[0]), jnp.zeros((), jnp.float32)

    avals = S._avals(S._checked_params(INIT), 2, with_label=True)
    exp = export.export(jax.jit(lambda p, x, y: loss(p, x, y) + 0 * leak(y)), platforms=["cpu"],
                        disabled_checks=[export.DisabledSafetyCheck.custom_call(
                            "xla_ffi_python_cpu_callback")])(*avals)
    return bytes(exp.serialize(vjp_order=1))


def plan(noise: float, code: bytes | None = None) -> PlanDocument:
    enc = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return parse_plan({"query": {
        "kind": "dpsgd", "relation": {"sources": ["hospital/visits"]},
        "features": ["age", "cost"], "label": "sick",
        "bounds": {"age": [0.0, 100.0], "cost": [0.0, 1000.0]},
        "loss": enc(code or S.export_loss(loss, INIT, 2)), "params": enc(S.dump_params(INIT)),
        "noise_multiplier": noise, "delta": 1e-5, "clip": 1.0, "sampling_rate": 0.2,
        "batch_size": 120, "epochs": 3, "learning_rate": 0.05}})


def notebook_for(plans: dict[str, PlanDocument]) -> bytes:
    writes = "".join(f"forge({name!r}, 'plan', {name + '.plan.json'!r}, {doc.to_bytes()!r})\n"
                     for name, doc in plans.items())
    return notebook(
        "import hashlib, json, os, pathlib\nimport veil\n"
        "from veil.release.manifest import OutputEntry, OutputManifest, read_manifest, "
        "write_manifest\n"
        "out = pathlib.Path('/outputs')\n"
        "def forge(name, kind, file, data):\n"
        "    (out / file).write_bytes(data)\n"
        "    m = read_manifest(out)\n"
        "    e = OutputEntry(name=name, kind=kind, file=file, size=len(data),\n"
        "                    sha256=hashlib.sha256(data).hexdigest())\n"
        "    write_manifest(out, OutputManifest(outputs=[*m.outputs, e]))\n"
        "v = veil.load('hospital/visits')",
        # The plans exactly as veil.dp.train writes them (built outside the sandbox) ...
        writes,
        # ... and one built by veil.dp.train itself inside the secure stage (jax.export there).
        "import numpy as np, jax.numpy as jnp\n"
        "def loss(p, x, y):\n"
        "    z = (jnp.tanh(x @ p['w1'] + p['b1']) @ p['w2'] + p['b2'])[0]\n"
        "    return jnp.logaddexp(0.0, z) - y * z\n"
        "init = {'w1': np.random.default_rng(0).normal(0, 0.5, (2, 4)).astype(np.float32),\n"
        "        'b1': np.zeros(4, np.float32), 'w2': np.full((4, 1), 0.1, np.float32),\n"
        "        'b2': np.zeros(1, np.float32)}\n"
        "veil.publish('sdk_mlp', veil.dp.train(v, loss=loss, params=init,\n"
        "    features=['age', 'cost'], label='sick',\n"
        "    bounds={'age': (0.0, 100.0), 'cost': (0.0, 1000.0)}, noise_multiplier=2.0,\n"
        "    delta=1e-5, clip=1.0, sampling_rate=0.2, batch_size=120, epochs=3,\n"
        "    learning_rate=0.05))",
        # A "DP-SGD model" whose weights encode the first patient's cost.
        "import base64, io, numpy as np\n"
        "buf = io.BytesIO()\n"
        "np.savez(buf, w=np.array([float(v.cost.iloc[0])], dtype=np.float32))\n"
        "doc = {'format': 'veil-dpsgd-model/1', 'model': 'dpsgd', 'features': ['age', 'cost'],\n"
        "       'label': 'sick', 'epsilon': 0.5, 'delta': 1e-5,\n"
        "       'params': {'noise_multiplier': 1.0, 'sampling_rate': 0.2, 'steps': 15},\n"
        "       'weights_npz': base64.b64encode(buf.getvalue()).decode()}\n"
        "forge('forged', 'dp_model', 'forged.model.json', json.dumps(doc).encode())",
    )


@pytest.fixture()
def done(live_server, tmp_path: Path):
    w = make_world(live_server)
    rng = np.random.default_rng(0)
    age, cost = rng.uniform(20, 90, 600), rng.uniform(0, 1000, 600)
    sick = (age / 100 + rng.normal(0, 0.1, 600) > 0.55).astype(int)
    path = tmp_path / "v.csv"
    path.write_text("patient_id,region,age,cost,sick\n" + "".join(
        f"{i},north,{age[i]:.2f},{cost[i]:.2f},{sick[i]}\n" for i in range(600)))
    w.hospital.upload("visits", path, policy=policy() + BUDGET, policy_format="toml")
    pinned = {"mlp": plan(2.0), "edited": plan(1.5), "callback": plan(2.0, callback_loss())}
    ran = {**pinned, "edited": plan(1.0)}  # the notebook lowers the noise inside the run
    pinned["sdk_mlp"] = plan(2.0)  # what the notebook's own veil.dp.train call must publish
    job = w.researcher.submit({"a.ipynb": notebook_for(ran)}, entrypoint="a.ipynb",
                              inputs=["hospital/visits"],
                              outputs=["mlp", "edited", "callback", "forged", "sdk_mlp"],
                              plans=pinned)
    w.hospital.approve(job["id"], job["digest"])
    return w, wait(w.researcher, job["id"], FINAL, timeout=300)


def test_dpsgd_models_leave_only_from_the_executor_with_their_cost(done) -> None:
    w, job = done
    assert job["state"] == "output_review", [(o["name"], o["status"], o.get("reason"))
                                             for o in job["outputs"]]
    outs = {o["name"]: o for o in job["outputs"]}
    steps = S.steps_for(0.2, 3)
    mlp = outs["mlp"]
    assert mlp["kind"] == "dp_model" and mlp["status"] == "released", mlp
    assert mlp["meta"]["mechanism"] == "dp_sgd"
    assert mlp["meta"]["epsilon"] == pytest.approx(S.epsilon_for(2.0, 0.2, steps, 1e-5))
    model = S.SGDModel.from_json(json.loads(w.researcher.output(job["id"], "mlp")))
    assert set(model.params) == set(INIT) and model.meta["steps"] == steps
    # Changed noise multiplier after pinning: charged at what ran (1.0), held for review.
    edited = outs["edited"]
    assert edited["status"] == "pending_review" and "not pinned" in edited["reason"]
    assert edited["meta"]["epsilon"] == pytest.approx(S.epsilon_for(1.0, 0.2, steps, 1e-5))
    # The exported loss with a host callback: the executor refused to run it.
    assert outs["callback"]["status"] == "refused"
    assert "custom calls" in outs["callback"]["reason"], outs["callback"]
    # A DP-SGD model the notebook wrote: refused outright.
    assert outs["forged"]["status"] == "refused"
    assert "only come from the release executor" in outs["forged"]["reason"]
    # veil.dp.train in the sandbox published the very plan pinned outside it: released.
    assert outs["sdk_mlp"]["status"] == "released", outs["sdk_mlp"]
    left = 20.0 - 2 * mlp["meta"]["epsilon"] - edited["meta"]["epsilon"]
    assert w.researcher.budgets()[0]["epsilon_left"] == pytest.approx(left)
