"""The lifecycle and the worker: legal transitions only, no double runs, no lost jobs."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.cleanroom.helpers import FINAL, killable_server, make_world, upload_csv, visits_csv, wait
from veil.jobs.lifecycle import ALLOWED, IllegalTransition, State
from veil.jobs.lifecycle import FINAL as FINAL_STATES


def test_transition_table_is_closed() -> None:
    assert {State.RELEASED, State.REJECTED, State.FAILED, State.CANCELLED} == FINAL_STATES
    happy = [State.SUBMITTED, State.PENDING_APPROVAL, State.APPROVED, State.RUNNING,
             State.OUTPUT_REVIEW, State.RELEASED]
    for a, b in itertools.pairwise(happy):
        assert b in ALLOWED[a]
    assert State.RUNNING not in ALLOWED[State.PENDING_APPROVAL]
    assert State.RELEASED not in ALLOWED[State.RUNNING]


def test_illegal_transition_is_impossible(live_server, tmp_path: Path) -> None:
    from veil.jobs.lifecycle import transition
    from veil.store.models import Job

    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv(30))
    job = w.researcher.submit({"a.py": b"import veil\n"}, entrypoint="a.py",
                              inputs=["hospital/visits"])
    with live_server.platform.db.transaction() as session:
        row = session.get(Job, job["id"])
        with pytest.raises(IllegalTransition):
            transition(session, row, State.RUNNING, actor="test")
    assert w.researcher.job(job["id"])["state"] == "pending_approval"
    w.researcher.cancel(job["id"])
    with pytest.raises(Exception, match="409"):
        w.researcher.cancel(job["id"])


def test_many_workers_run_each_job_once(tmp_path: Path) -> None:
    from tests.conftest import start_server

    gen = start_server(tmp_path / "home", workers=3)
    server = next(gen)
    try:
        w = make_world(server)
        upload_csv(w.hospital, tmp_path, "visits", visits_csv(30))
        jobs = []
        for i in range(4):
            job = w.researcher.submit({"a.py": f"import veil\nveil.publish('x', {i})\n".encode()},
                                      entrypoint="a.py", inputs=["hospital/visits"],
                                      outputs=["x"])
            w.hospital.approve(job["id"], job["digest"])
            jobs.append(job["id"])
        for job_id in jobs:
            done = wait(w.researcher, job_id, FINAL)
            runs = [t for t in done["transitions"] if t["to"] == "running"]
            assert done["state"] == "output_review" and len(runs) == 1, done
    finally:
        next(gen, None)


def test_racing_claims_give_a_job_to_exactly_one_worker(tmp_path: Path) -> None:
    from tests.conftest import start_server
    from veil.jobs.worker import Worker

    gen = start_server(tmp_path / "home", workers=0)  # only the racers below claim
    server = next(gen)
    try:
        w = make_world(server)
        upload_csv(w.hospital, tmp_path, "visits", visits_csv(30))
        platform = server.platform
        job = w.researcher.submit({"a.py": b"import veil\n"}, entrypoint="a.py",
                                  inputs=["hospital/visits"])
        w.hospital.approve(job["id"], job["digest"])
        backend = platform.secure_stage
        workers = [Worker(platform.db, platform.catalog, backend, platform.settings.run_dir)
                   for _ in range(6)]
        claimed: list[str | None] = []
        barrier = threading.Barrier(len(workers))

        def claim(worker: Worker) -> None:
            barrier.wait()
            claimed.append(worker.claim())

        threads = [threading.Thread(target=claim, args=(wk,)) for wk in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert claimed.count(job["id"]) == 1 and claimed.count(None) == 5
        assert w.researcher.job(job["id"])["state"] == "running"
    finally:
        next(gen, None)


def test_a_killed_worker_loses_no_job(tmp_path: Path, database_url: str) -> None:
    """SIGKILL the server mid-run; on restart the job is re-queued and completes."""
    server = killable_server(tmp_path, database_url)
    try:
        server.start()
        w = server.world()
        upload_csv(w.hospital, tmp_path, "visits", visits_csv(30))
        code = "import time, veil\ntime.sleep(4)\nveil.publish('done', 1)\n"
        job = w.researcher.submit({"a.py": code.encode()}, entrypoint="a.py",
                                  inputs=["hospital/visits"], outputs=["done"])
        w.hospital.approve(job["id"], job["digest"])
        wait(w.researcher, job["id"], {"running"}, timeout=60)
        server.kill()
        server.start()
        done = wait(w.researcher, job["id"], FINAL, timeout=120)
        assert done["state"] == "output_review", (done["result"], done["transitions"])
        reasons = [t["reason"] for t in done["transitions"] if t["actor"] == "system:recovery"]
        assert reasons and "re-queued" in reasons[0]
        assert done["attempts"] == 2
    finally:
        server.kill()


def _flaky_swtpm(bin_dir: Path, failures: int) -> None:
    """A swtpm on PATH that exits at start the first `failures` times, then is the real one."""
    real = shutil.which("swtpm")
    assert real is not None
    bin_dir.mkdir()
    script = bin_dir / "swtpm"
    script.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{bin_dir}/count" 2>/dev/null || echo 0)\n'
        f'echo $((n + 1)) > "{bin_dir}/count"\n'
        f'if [ "$n" -lt {failures} ]; then exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)


@pytest.mark.tpm
@pytest.mark.parametrize(("failures", "state"), [(1, "output_review"), (99, "failed")])
def test_a_platform_fault_requeues_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           failures: int, state: str) -> None:
    """swtpm fails at the job's start: re-queued (not failed), bounded by max_attempts."""
    from tests.conftest import start_server

    gen = start_server(tmp_path / "home")  # the swtpm template is made with the real swtpm
    server = next(gen)
    try:
        _flaky_swtpm(tmp_path / "bin", failures)
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        w = make_world(server)
        upload_csv(w.hospital, tmp_path, "visits", visits_csv(30))
        job = w.researcher.submit({"a.py": b"import veil\nveil.publish('x', 1)\n"},
                                  entrypoint="a.py", inputs=["hospital/visits"], outputs=["x"])
        w.hospital.approve(job["id"], job["digest"])
        done = wait(w.researcher, job["id"], FINAL, timeout=120)
        assert done["state"] == state, done
        assert done["attempts"] == 2
        moves = [(t["from"], t["to"], t["reason"] or "") for t in done["transitions"]]
        requeue = [r for f, t, r in moves if (f, t) == ("running", "approved")]
        assert len(requeue) == 1
        assert "platform fault (SwtpmError: swtpm exited during start-up" in requeue[0]
        assert requeue[0].endswith("during attempt 1; re-queued")
        if state == "failed":
            assert done["reason"].endswith("during attempt 2 of 2; giving up")
            assert "platform fault (SwtpmError" in done["reason"]
        else:
            assert "worker error" not in str(moves)
    finally:
        next(gen, None)


def _refused(sock_path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(sock_path))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


def _mounts_under(path: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(path))]


def _cgroups_of(pid: int) -> list[Path]:
    from veil.tee.sandbox import _cgroup

    found = []
    for controller in ("memory", "pids"):
        own = _cgroup._own_path(controller).lstrip("/")
        found += (Path("/sys/fs/cgroup") / controller / own).glob(f"veil-sbx-{pid}-*")
    return found


@pytest.mark.tpm
def test_kill_9_mid_job_leaves_nothing_after_restart(tmp_path: Path) -> None:
    """SIGKILL the server while the sandbox runs: its children die with it, and the restart
    sweeps the staging mount, cgroups, swtpm state and key-agent dir it left."""
    import psutil

    server = killable_server(tmp_path)
    home = server.home
    agents = set(Path(tempfile.gettempdir()).glob("veil-ka-*"))
    try:
        server.start()
        assert server.process is not None
        w = server.world()
        upload_csv(w.hospital, tmp_path, "visits", visits_csv(30))
        code = "import time, veil\ntime.sleep(6)\nveil.publish('done', 1)\n"
        job = w.researcher.submit({"a.py": code.encode()}, entrypoint="a.py",
                                  inputs=["hospital/visits"], outputs=["done"])
        w.hospital.approve(job["id"], job["digest"])
        wait(w.researcher, job["id"], {"running"}, timeout=60)
        deadline = time.monotonic() + 30
        children: list[psutil.Process] = []
        while time.monotonic() < deadline:  # until the sandbox (bwrap) and its swtpm run
            children = psutil.Process(server.process.pid).children(recursive=True)
            if {"swtpm", "bwrap"} <= {c.name() for c in children}:
                break
            time.sleep(0.05)
        assert {"swtpm", "bwrap"} <= {c.name() for c in children}
        time.sleep(0.5)
        old_pid = server.process.pid
        server.kill()

        _, alive = psutil.wait_procs(children, timeout=5)
        assert alive == [], [p.name() for p in alive]  # PDEATHSIG / --die-with-parent
        # What a crash leaves behind, before the restart sweeps it:
        assert _mounts_under(home)
        assert list((home / "run" / "_tpm").glob(f"{old_pid}-*"))
        assert _cgroups_of(old_pid)
        dead_agents = [d for d in set(Path(tempfile.gettempdir()).glob("veil-ka-*")) - agents
                       if _refused(d / "agent.sock")]
        assert dead_agents  # the job's key-agent dir, its socket now unanswered

        server.start()
        assert not [m for m in _mounts_under(home) if f"/{old_pid}-" in m]
        assert not list((home / "run" / "_tpm").glob(f"{old_pid}-*"))
        assert not list((home / "run" / "_sandbox").glob(f"{old_pid}-*"))
        assert _cgroups_of(old_pid) == []
        assert not [d for d in dead_agents if d.exists()]
        done = wait(w.researcher, job["id"], FINAL, timeout=120)
        assert done["state"] == "output_review", done
    finally:
        server.kill()
        from veil.tee.sandbox import sweep_scratch

        sweep_scratch(home / "run" / "_sandbox")  # a failed assertion above may leave a mount
