"""Malicious notebooks through the real server: contained, failed with a reason, server healthy."""

from __future__ import annotations

import httpx
import pytest

from tests.cleanroom.helpers import make_world, notebook, upload_csv, visits_csv, wait

FAILED_OR_DONE = {"failed", "output_review", "released"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import start_server
    from veil.tee.sandbox import SandboxLimits

    tmp = tmp_path_factory.mktemp("contain")
    limits = SandboxLimits(cpu_seconds=20, memory_bytes=1024**3, max_processes=64,
                           max_file_bytes=32 * 1024**2, wall_seconds=25,
                           tmpfs_bytes=64 * 1024**2, output_bytes=64 * 1024**2)
    gen = start_server(tmp / "home", limits=limits)
    server = next(gen)
    w = make_world(server)
    upload_csv(w.hospital, tmp, "visits", visits_csv(100))
    upload_csv(w.insurer, tmp, "claims", "patient_id,amount\n1,10\n")
    yield server, w
    next(gen, None)


def run(world, *cells: str) -> dict:
    server, w = world
    job = w.researcher.submit({"a.ipynb": notebook(*cells)}, entrypoint="a.ipynb",
                              inputs=["hospital/visits"])
    w.hospital.approve(job["id"], job["digest"])
    done = wait(w.researcher, job["id"], FAILED_OR_DONE, timeout=240)
    assert httpx.get(server.url + "/healthz").status_code == 200
    return done


def home_file(world, name: str) -> str:
    server, _ = world
    return str(server.platform.settings.home / name)


def test_socket_is_refused(world) -> None:
    job = run(world, "import socket\ns = socket.create_connection(('127.0.0.1', 22), timeout=3)")
    assert job["state"] == "failed"
    assert job["result"]["cell"] == 1 and job["result"]["error_type"] in (
        "PermissionError", "OSError", "ConnectionRefusedError")


def test_server_database_is_invisible(world) -> None:
    path = home_file(world, "veil.sqlite")
    job = run(world, f"open({path!r}, 'rb').read()")
    assert job["state"] == "failed" and job["result"]["error_type"] == "FileNotFoundError"


def test_other_dataset_files_are_invisible(world) -> None:
    blobs = home_file(world, "blobs")
    job = run(world, f"import os\nos.listdir({blobs!r})")
    assert job["state"] == "failed" and job["result"]["error_type"] == "FileNotFoundError"
    job = run(world, "import os\nassert os.listdir('/inputs') == ['hospital__visits.enc', "
                     "'inputs.json'] or sorted(os.listdir('/inputs')) == "
                     "['hospital__visits.enc', 'inputs.json']\n"
                     "open('/inputs/insurer__claims.enc')")
    assert job["state"] == "failed" and job["result"]["error_type"] == "FileNotFoundError"


def test_traceback_and_message_never_leave(world) -> None:
    job = run(world, "import veil\nv = veil.load('hospital/visits')",
              "raise ValueError('secret row: ' + v.to_csv())")
    assert job["state"] == "failed"
    assert job["result"]["error_type"] == "ValueError" and job["result"]["cell"] == 2
    assert "secret" not in str(job) and "north" not in str(job)


@pytest.mark.slow
def test_fork_bomb(world) -> None:
    job = run(world, "import os\nwhile True:\n    os.fork()")
    assert job["state"] == "failed"


@pytest.mark.slow
def test_allocate_50_gb(world) -> None:
    job = run(world, "x = bytearray(50 * 1024**3)")
    assert job["state"] == "failed" and "memory" in (job["reason"] or "").lower()


@pytest.mark.slow
def test_write_10_gb(world) -> None:
    job = run(world, "with open('/outputs/big', 'wb') as f:\n"
                     "    for _ in range(10 * 1024):\n        f.write(b'x' * 1024**2)")
    assert job["state"] == "failed"


@pytest.mark.slow
def test_run_forever(world) -> None:
    job = run(world, "import time\nwhile True:\n    time.sleep(1)")
    assert job["state"] == "failed" and "timeout" in (job["reason"] or "").lower()


def test_huge_output_is_refused(world) -> None:
    job = run(world, "import veil, pandas as pd\n"
                     "veil.publish('big', pd.DataFrame({'x': range(12_000_000)}).astype(str))")
    assert job["state"] == "failed"
