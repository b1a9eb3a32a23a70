"""API under concurrent load, against a real `veil serve` on 127.0.0.1.

    .venv/bin/python bench/load.py [--submits 50] [--reads 200] [--uploads 3]
                                   [--database-url postgresql+psycopg://...]

Starts `veil serve --workers 0` in a fresh home (the jobs stay pending approval, so this
measures the API and the database, not the sandbox), creates a provider and a consumer,
then fires every request at once: job submits, reads (job list, dataset list, dataset
detail, stage-1 view) and uploads, while polling /healthz. Prints p50/p99 latency per route
and the number of 5xx answers (a request unanswered after --timeout counts as one).
`--database-url` must name an empty database (see scripts/start-postgres.sh); without it
the server uses SQLite in the temporary home. Exits non-zero if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

VEIL = Path(sys.executable).with_name("veil")
POLICY = 'consumers = ["lab"]\nmin_group_size = 5\n[views.mock]\nrows = 200\n'
NOTEBOOK = json.dumps({
    "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
               "source": "import veil\nv = veil.load('acme/visits')\nveil.publish('n', len(v))"}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode()


def _csv(rows: int) -> bytes:
    regions = ("north", "south", "east")
    lines = ["patient_id,region,cost"]
    lines += [f"{i},{regions[i % 3]},{(i * 37) % 500 + 10}" for i in range(1, rows + 1)]
    return ("\n".join(lines) + "\n").encode()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _veil(*args: str, env: dict[str, str]) -> str:
    return subprocess.run([str(VEIL), *args], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    async def call(self, http: httpx.AsyncClient, route: str, method: str, path: str,
                   **kw: object) -> httpx.Response | None:
        """One request; no answer within the client timeout counts as a failure ("timeout")."""
        start = time.perf_counter()
        try:
            response = await http.request(method, path, **kw)  # type: ignore[arg-type]
        except httpx.TimeoutException:
            self.latency[route].append(time.perf_counter() - start)
            self.statuses[route]["timeout"] += 1
            self.errors[route] += 1
            return None
        self.latency[route].append(time.perf_counter() - start)
        self.statuses[route][str(response.status_code)] += 1
        if response.status_code >= 500:
            self.errors[route] += 1
        return response


async def _run(url: str, admin: str, args: argparse.Namespace) -> Recorder:
    rec = Recorder()
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as http:
        def auth(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        for party in ("acme", "lab"):
            (await http.post("/api/v1/admin/parties", json={"name": party},
                             headers=auth(admin))).raise_for_status()

        async def user(name: str, role: str, party: str) -> str:
            r = await http.post("/api/v1/admin/users", headers=auth(admin),
                                json={"name": name, "role": role, "party": party})
            r.raise_for_status()
            return str(r.json()["token"])

        provider, consumer = await user("alice", "provider", "acme"), await user(
            "carol", "consumer", "lab")

        async def upload(name: str, rows: int) -> None:
            r = await rec.call(http, "POST /datasets", "POST", "/api/v1/datasets",
                               headers=auth(provider),
                               json={"name": name, "policy": POLICY, "policy_format": "toml"})
            if r is not None and r.status_code == 201:
                await rec.call(http, "PUT /datasets/{id}/data", "PUT",
                               f"/api/v1/datasets/{r.json()['id']}/data",
                               params={"filename": f"{name}.csv"}, content=_csv(rows),
                               headers={**auth(provider),
                                        "Content-Type": "application/octet-stream"})

        await upload("visits", 1000)

        async def submit(i: int) -> None:
            spec = {"entrypoint": "a.ipynb", "inputs": ["acme/visits"], "outputs": []}
            files = [("spec", (None, json.dumps(spec), "application/json")),
                     ("files", ("a.ipynb", NOTEBOOK + b" " * i, "application/octet-stream"))]
            await rec.call(http, "POST /jobs", "POST", "/api/v1/jobs", files=files,
                           headers=auth(consumer))

        reads = [("GET /jobs", "/api/v1/jobs"), ("GET /datasets", "/api/v1/datasets"),
                 ("GET /datasets/{name}", "/api/v1/datasets/acme/visits"),
                 ("GET /datasets/{name}/view", "/api/v1/datasets/acme/visits/view")]

        async def read(i: int) -> None:
            route, path = reads[i % len(reads)]
            await rec.call(http, route, "GET", path, headers=auth(consumer))

        done = asyncio.Event()

        async def health() -> None:
            while not done.is_set():
                await rec.call(http, "GET /healthz", "GET", "/healthz")
                await asyncio.sleep(0.1)

        poller = asyncio.create_task(health())
        await asyncio.gather(*(submit(i) for i in range(args.submits)),
                             *(read(i) for i in range(args.reads)),
                             *(upload(f"extra{i}", args.upload_rows)
                               for i in range(args.uploads)))
        done.set()
        await poller
    return rec


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--submits", type=int, default=50)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--uploads", type=int, default=3)
    parser.add_argument("--upload-rows", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a request may take before it counts as failed")
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL of an EMPTY database (default: SQLite in a temp home)")
    args = parser.parse_args()
    # `timeout`/CI send SIGTERM: exit through the finally below, which stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="veil-load-") as tmp:
        env = {**os.environ, "VEIL_HOME": tmp}
        env.pop("VEIL_DATABASE_URL", None)
        if args.database_url:
            env["VEIL_DATABASE_URL"] = args.database_url
        admin = _veil("admin", "init", env=env).splitlines()[-1]
        port = _port()
        log = Path(tmp, "serve.log").open("w")  # noqa: SIM115 (closed in finally)
        server = subprocess.Popen([str(VEIL), "serve", "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", "0"], env=env, stdout=log, stderr=log)
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
            start = time.perf_counter()
            rec = asyncio.run(_run(url, admin, args))
            wall = time.perf_counter() - start
            if sum(rec.errors.values()):
                errors = {line for line in Path(tmp, "serve.log").read_text().splitlines()
                          if "Error" in line and "HTTP/1.1" not in line}
                print("server errors:", *sorted(errors)[:10], sep="\n  ", file=sys.stderr)
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:  # stuck requests keep uvicorn from exiting
                server.kill()
                server.wait()
            log.close()

    db = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{db}: {args.submits} submits + {args.reads} reads + {args.uploads} uploads "
          f"({args.upload_rows} rows) at once, {wall:.1f} s wall")
    print(f"{'route':28} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  statuses")
    for route in sorted(rec.latency):
        ms = [v * 1000 for v in rec.latency[route]]
        codes = ", ".join(f"{c} x{n}" for c, n in sorted(rec.statuses[route].items()))
        print(f"{route:28} {len(ms):5d} {statistics.median(ms):9.0f} {_quantile(ms, 0.99):9.0f} "
              f"{max(ms):9.0f}  {codes}")
    total_5xx = sum(rec.errors.values())
    print(f"5xx answers or timeouts: {total_5xx}")
    return 1 if total_5xx else 0


if __name__ == "__main__":
    sys.exit(main())
