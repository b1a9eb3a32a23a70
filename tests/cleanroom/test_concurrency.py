"""Concurrent requests through a real server: no 5xx, and the event loop stays free.

The regression: `submit` and `upload` were `async def` routes doing blocking DB work on the
event loop. An upload's ingest thread held SQLite's write lock while pulling its body from
the loop; a submit on the loop waited for that lock, so neither moved until the 30 s busy
timeout ended in `database is locked` (500) and `/healthz` stalled behind them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.cleanroom.helpers import make_world, notebook, policy, upload_csv, visits_csv

NB = notebook("import veil\nv = veil.load('hospital/visits')", "veil.publish('n', int(len(v)))")


def _submit(url: str, token: str, i: int) -> int:
    spec = {"entrypoint": "a.ipynb", "inputs": ["hospital/visits"], "outputs": []}
    files = [("spec", (None, json.dumps(spec), "application/json")),
             ("files", ("a.ipynb", NB + b" " * i, "application/octet-stream"))]
    with httpx.Client(base_url=url, timeout=120) as http:
        return http.post("/api/v1/jobs", files=files,
                         headers={"Authorization": f"Bearer {token}"}).status_code


def _read(url: str, token: str, path: str) -> int:
    with httpx.Client(base_url=url, timeout=120) as http:
        return http.get(path, headers={"Authorization": f"Bearer {token}"}).status_code


def _slow_upload(url: str, token: str) -> int:
    """An upload whose body trickles in over ~2 s, as over a slow link."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=120, headers=headers) as http:
        draft = http.post("/api/v1/datasets", json={
            "name": "slow", "policy": policy(), "policy_format": "toml"}).json()
        lines = visits_csv(2000).encode().splitlines(keepends=True)

        def body() -> Iterator[bytes]:
            step = len(lines) // 10
            for start in range(0, len(lines), step):
                yield b"".join(lines[start:start + step])
                time.sleep(0.2)

        return http.put(f"/api/v1/datasets/{draft['id']}/data", params={"filename": "s.csv"},
                        content=body(),
                        headers={"Content-Type": "application/octet-stream"}).status_code


def test_concurrent_submits_reads_and_upload(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv())
    url, consumer, provider = live_server.url, w.researcher.token, w.hospital.token
    health: list[float] = []
    done = threading.Event()

    def poll_health() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while not done.is_set():
                start = time.monotonic()
                assert http.get("/healthz").status_code == 200
                health.append(time.monotonic() - start)
                time.sleep(0.05)

    poller = threading.Thread(target=poll_health)
    poller.start()
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            upload = pool.submit(_slow_upload, url, provider)
            time.sleep(0.3)  # the upload is mid-body when the submits arrive
            submits = [pool.submit(_submit, url, consumer, i) for i in range(8)]
            reads = [pool.submit(_read, url, tok, path) for _ in range(4)
                     for tok, path in ((consumer, "/api/v1/jobs"),
                                       (consumer, "/api/v1/datasets"),
                                       (consumer, "/api/v1/datasets/hospital/visits/view"),
                                       (provider, "/api/v1/jobs"))]
            submit_codes = [f.result() for f in submits]
            read_codes = [f.result() for f in reads]
            upload_code = upload.result()
    finally:
        done.set()
        poller.join()
    elapsed = time.monotonic() - start

    assert submit_codes == [201] * 8
    assert read_codes == [200] * len(read_codes)
    assert upload_code == 200
    assert health and max(health) < 2.0, f"/healthz took up to {max(health):.1f} s"
    assert elapsed < 30, f"the burst took {elapsed:.1f} s"
    assert len(w.researcher.jobs()) == 8
    assert w.hospital.dataset("hospital/slow")["rows"] == 2000
