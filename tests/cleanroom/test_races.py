"""Workers with their own engines racing on one queue and one budget.

Each racer gets its own `Database` (engine, pool, connections), as separate worker processes
would. Run with `VEIL_TEST_DATABASE_URL` set, this is the PostgreSQL claim path (conditional
UPDATE) and the ledger's row locks under real concurrency; on SQLite, the write lock.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.cleanroom.helpers import dp_query, make_world, notebook, policy, visits_csv

BUDGET = '\n[budget]\nepsilon = 1.0\ndelta = 0.0\nrule = "basic"\n'


def _approved_jobs(w, tmp: Path, count: int, cells: tuple[str, ...],
                   plans: dict | None = None) -> list[str]:
    path = tmp / "v.csv"
    path.write_text(visits_csv(200))
    w.hospital.upload("visits", path, policy=policy() + BUDGET, policy_format="toml")
    ids = []
    for i in range(count):
        job = w.researcher.submit({"a.ipynb": notebook(*cells, f"# job {i}")},
                                  entrypoint="a.ipynb", inputs=["hospital/visits"],
                                  outputs=sorted(plans or {}), plans=plans)
        w.hospital.approve(job["id"], job["digest"])
        ids.append(job["id"])
    return ids


def _workers(server, count: int) -> list:
    from veil.jobs.worker import Worker
    from veil.store import Database

    platform = server.platform
    return [Worker(Database(platform.db.url), platform.catalog, platform.secure_stage,
                   platform.settings.run_dir, limits=_limits(), attestation=platform.attestation)
            for _ in range(count)]


def _limits():
    from veil.tee.sandbox import SandboxLimits

    return SandboxLimits(cpu_seconds=60, memory_bytes=2 * 1024**3, wall_seconds=120,
                         max_file_bytes=64 * 1024**2, output_bytes=128 * 1024**2)


@pytest.fixture()
def server(tmp_path: Path):
    from tests.conftest import start_server

    gen = start_server(tmp_path / "home", workers=0)  # only the racers below run jobs
    yield next(gen)
    next(gen, None)


def test_racing_claims_hand_out_every_job_exactly_once(server, tmp_path: Path) -> None:
    w = make_world(server)
    ids = _approved_jobs(w, tmp_path, 8, ("import veil",))
    workers = _workers(server, 4)
    claimed: list[str] = []
    barrier = threading.Barrier(len(workers))

    def drain(worker) -> None:
        barrier.wait()
        while (job_id := worker.claim()) is not None:
            claimed.append(job_id)

    threads = [threading.Thread(target=drain, args=(wk,)) for wk in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)
    assert {w.researcher.job(i)["attempts"] for i in ids} == {1}
    for worker in workers:
        worker.db.dispose()


def test_two_workers_race_on_one_budget_and_one_queue(server, tmp_path: Path) -> None:
    """Four jobs each spend 0.3 of a budget of 1.0: each runs once and exactly three release."""
    w = make_world(server)
    ids = _approved_jobs(w, tmp_path, 4, (
        "import veil\nv = veil.load('hospital/visits')",
        "veil.publish('n', veil.dp.count(v, epsilon=0.3))"),
        plans={"n": dp_query(["hospital/visits"], "count", epsilon=0.3)})
    workers = _workers(server, 2)
    ran: list[str] = []
    barrier = threading.Barrier(len(workers))

    def work(worker) -> None:
        barrier.wait()
        while (job_id := worker.claim()) is not None:
            ran.append(job_id)
            worker.execute(job_id)

    threads = [threading.Thread(target=work, args=(wk,)) for wk in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ran) == sorted(ids), "a job ran twice or not at all"
    jobs = [w.researcher.job(i) for i in ids]
    assert all(j["attempts"] == 1 for j in jobs)
    statuses = sorted(j["outputs"][0]["status"] for j in jobs)
    assert statuses == ["refused", "released", "released", "released"], jobs
    [row] = w.researcher.budgets()
    assert row["epsilon_left"] == pytest.approx(0.1, abs=1e-6)
    for worker in workers:
        worker.db.dispose()
