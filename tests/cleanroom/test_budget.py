"""DP outputs at release: verified, charged atomically, refused past the budget."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.cleanroom.helpers import (
    FINAL,
    dp_query,
    make_world,
    notebook,
    policy,
    visits_csv,
    wait,
)

BUDGET = '\n[budget]\nepsilon = 1.0\ndelta = 0.0\nrule = "basic"\n'


def _upload(w, tmp: Path) -> None:
    path = tmp / "v.csv"
    path.write_text(visits_csv(200))
    w.hospital.upload("visits", path, policy=policy() + BUDGET, policy_format="toml")


def _run(w, *cells: str, plans: dict | None = None) -> dict:
    job = w.researcher.submit({"a.ipynb": notebook(*cells)}, entrypoint="a.ipynb",
                              inputs=["hospital/visits"], outputs=sorted(plans or {}),
                              plans=plans)
    w.hospital.approve(job["id"], job["digest"])
    return wait(w.researcher, job["id"], FINAL)


def _count(epsilon: float) -> object:
    return dp_query(["hospital/visits"], "count", epsilon=epsilon)


def test_dp_outputs_are_charged_and_refused_past_the_budget(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    _upload(w, tmp_path)
    load = "import veil\nv = veil.load('hospital/visits')"
    job = _run(w, load, "veil.publish('n1', veil.dp.count(v, epsilon=0.4))\n"
                        "veil.publish('n2', veil.dp.count(v, epsilon=0.4))",
               plans={"n1": _count(0.4), "n2": _count(0.4)})
    assert job["state"] == "released", job
    outs = {o["name"]: o for o in job["outputs"]}
    assert outs["n1"]["status"] == outs["n2"]["status"] == "released"
    left = outs["n2"]["meta"]["budget_left"]["hospital/visits"]["epsilon"]
    assert left == pytest.approx(0.2, abs=1e-6)
    released = json.loads(w.researcher.output(job["id"], "n1"))
    assert released["mechanism"] == "count" and released["epsilon"] == pytest.approx(0.4)
    assert abs(released["value"] - 200) < 60
    [row] = w.researcher.budgets()
    assert row["epsilon_left"] == pytest.approx(0.2, abs=1e-6)

    job = _run(w, load, "veil.publish('n3', veil.dp.count(v, epsilon=0.4))",
               plans={"n3": _count(0.4)})
    out = job["outputs"][0]
    assert out["status"] == "refused"
    assert "hospital/visits" in out["reason"] and "0.2 left" in out["reason"]
    assert w.researcher.budgets()[0]["epsilon_left"] == pytest.approx(0.2, abs=1e-6)


def test_racing_releases_never_overspend(tmp_path: Path, database_url: str) -> None:
    """Eight releases race on one budget of 1.0, each 0.3: exactly three may win.

    Each racer has its own engine, as separate worker processes would.
    """
    from veil.release import TO_CHARGE, Decision, OutputEntry, ledger
    from veil.store import Database, open_database
    from veil.store.models import Dataset, Party

    db = open_database(database_url)
    with db.transaction() as session:
        owner, consumer = Party(name="hospital"), Party(name="lab")
        session.add_all([owner, consumer])
        session.flush()
        dataset = Dataset(party_id=owner.id, name="visits", status="ready",
                          policy={"budget": {"epsilon": 1.0}})
        session.add(dataset)
        session.flush()
        dataset_id, party_id = dataset.id, consumer.id
    results: list[str] = []
    barrier = threading.Barrier(8)

    def release(i: int) -> None:
        entry = OutputEntry(name=f"o{i}", kind="dp", file=f"o{i}.json", sha256="0" * 64, size=0)
        decision = Decision(entry, tmp_path, TO_CHARGE, None, {"epsilon": 0.3, "delta": 0.0})
        own = Database(database_url)
        barrier.wait()
        with own.transaction() as session:
            ds = session.get(Dataset, dataset_id)
            ledger.charge(session, job_id=None, party_id=party_id,  # type: ignore[arg-type]
                          datasets=[ds], decisions=[decision])
        own.dispose()
        results.append(decision.status)

    threads = [threading.Thread(target=release, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count("released") == 3
    with db.transaction() as session:
        left = ledger.remaining(session, session.get(Dataset, dataset_id), party_id)
    assert left is not None and left.epsilon_left == pytest.approx(0.1)
    db.dispose()
