"""Web console page latency, against a real `veil serve` on 127.0.0.1.

    .venv/bin/python bench/console.py [--cells 200] [--jobs 50] [--requests 30]

Starts `veil serve --workers 0` in a fresh home, creates a provider and a consumer, uploads
a dataset and submits --jobs jobs (they stay pending approval), the first with a notebook of
--cells code cells. Signs in through the console like a browser (token for session cookie)
and requests each page --requests times in a row: the provider's home (every job and
dataset), the approval page of the big job (every cell highlighted with Pygments), the audit
page (hash chain verified on each request) and the consumer's home. Prints p50/p95 per page
and the page size. Exits non-zero on any non-200 answer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

VEIL = Path(sys.executable).with_name("veil")
POLICY = 'consumers = ["lab"]\nmin_group_size = 5\n[views.mock]\nrows = 200\n'
CELL = ("import veil\nv = veil.load('acme/visits')  # cell {i}\n"
        "by_region = v.groupby('region')['cost'].agg(['mean', 'count'])\n"
        "veil.publish('t{i}', by_region) if {i} == 0 else None\n")


def _notebook(cells: int) -> bytes:
    return json.dumps({"cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                                  "outputs": [], "source": CELL.format(i=i)}
                                 for i in range(cells)],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode()


def _veil(*args: str, env: dict[str, str]) -> str:
    return subprocess.run([str(VEIL), *args], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup(url: str, admin: str, args: argparse.Namespace) -> tuple[str, str, str]:
    http = httpx.Client(base_url=url, timeout=60)

    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    for party in ("acme", "lab"):
        http.post("/api/v1/admin/parties", json={"name": party},
                  headers=auth(admin)).raise_for_status()
    tokens = {}
    for name, role, party in (("ann", "provider", "acme"), ("lee", "consumer", "lab")):
        r = http.post("/api/v1/admin/users", json={"name": name, "role": role, "party": party},
                      headers=auth(admin))
        r.raise_for_status()
        tokens[role] = r.json()["token"]
    draft = http.post("/api/v1/datasets", json={"name": "visits", "policy": POLICY},
                      headers=auth(tokens["provider"]))
    draft.raise_for_status()
    rows = "\n".join(f"{i},{('north', 'south')[i % 2]},{i % 500}" for i in range(5000))
    http.put(f"/api/v1/datasets/{draft.json()['id']}/data", headers=auth(tokens["provider"]),
             content=("patient_id,region,cost\n" + rows + "\n").encode()).raise_for_status()
    big = ""
    for i in range(args.jobs):
        nb = _notebook(args.cells if i == 0 else 3)
        spec = {"entrypoint": "a.ipynb", "inputs": ["acme/visits"], "outputs": ["t0"]}
        r = http.post("/api/v1/jobs", headers=auth(tokens["consumer"]),
                      files=[("spec", (None, json.dumps(spec), "application/json")),
                             ("files", ("a.ipynb", nb + b" " * i, "application/octet-stream"))])
        r.raise_for_status()
        big = big or r.json()["id"]
    return tokens["provider"], tokens["consumer"], big


def _session(url: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60, follow_redirects=False)
    form = client.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    client.post("/signin", data={"token": token, "csrf": csrf.group(1)})
    return client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failures = 0
    with tempfile.TemporaryDirectory(prefix="veil-console-") as tmp:
        env = {**os.environ, "VEIL_HOME": tmp}
        env.pop("VEIL_DATABASE_URL", None)
        admin = _veil("admin", "init", env=env).splitlines()[-1]
        port = _port()
        log = Path(tmp, "serve.log").open("w")  # noqa: SIM115 (closed in finally)
        server = subprocess.Popen([str(VEIL), "serve", "--host", "127.0.0.1", "--port",
                                   str(port), "--workers", "0"], env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/healthz", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        print(Path(tmp, "serve.log").read_text(), file=sys.stderr)
                        return 1
                    time.sleep(0.2)
            provider_token, consumer_token, big = _setup(url, admin, args)
            provider = _session(url, provider_token)
            consumer = _session(url, consumer_token)
            pages = [("provider home", provider, "/provider"),
                     (f"approval page ({args.cells} cells)", provider, f"/provider/jobs/{big}"),
                     ("audit", provider, "/audit"),
                     ("consumer home", consumer, "/consumer")]
            print(f"{args.jobs} jobs pending, {args.requests} sequential requests per page")
            print(f"{'page':<28}{'p50 ms':>9}{'p95 ms':>9}{'size kB':>9}")
            for label, client, path in pages:
                times, size = [], 0
                for _ in range(args.requests):
                    start = time.perf_counter()
                    response = client.get(path)
                    times.append((time.perf_counter() - start) * 1000)
                    failures += response.status_code != 200
                    size = len(response.content)
                times.sort()
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                print(f"{label:<28}{statistics.median(times):>9.1f}{p95:>9.1f}"
                      f"{size / 1024:>9.1f}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    if failures:
        print(f"{failures} requests did not answer 200", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
