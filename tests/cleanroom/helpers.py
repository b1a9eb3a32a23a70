"""Building blocks for clean-room tests: parties, users, uploads, notebooks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nbformat

from veil.privacy.plans import PlanDocument, parse_plan
from veil.sdk.client import Client

POLICY = """\
consumers = ["lab"]
min_group_size = {k}
categories = {{ region = ["north", "south", "east"] }}

[privacy_unit]
id_column = "patient_id"
max_contributions = 1

[approval]
mode = "{mode}"
auto_digests = {digests}

[views.mock]
rows = 200

[views.sample]
publishable = true
rows = 50
"""


@dataclass
class World:
    admin: Client
    hospital: Client
    insurer: Client
    researcher: Client
    outsider: Client  # a consumer of another party, not in any policy


def make_world(server: Any) -> World:
    admin = server.client(server.admin_token)
    for party in ("hospital", "insurer", "lab", "other"):
        admin.create_party(party)

    def user(name: str, role: str, party: str) -> Client:
        return admin.with_token(admin.create_user(name, role, party)["token"])

    return World(admin, user("alice", "provider", "hospital"), user("bob", "provider", "insurer"),
                 user("carol", "consumer", "lab"), user("dave", "consumer", "other"))


def policy(k: int = 5, mode: str = "manual", digests: list[str] | None = None) -> str:
    quoted = "[" + ", ".join(f'"{d}"' for d in digests or []) + "]"
    return POLICY.format(k=k, mode=mode, digests=quoted)


def upload_csv(client: Client, tmp: Path, name: str, text: str, **policy_kw: Any) -> dict:
    path = tmp / f"{name}.csv"
    path.write_text(text)
    return client.upload(name, path, policy=policy(**policy_kw), policy_format="toml")


def visits_csv(rows: int = 300) -> str:
    lines = ["patient_id,region,cost"]
    regions = ["north", "south", "east"]
    lines += [f"{i},{regions[i % 3]},{(i * 37) % 500 + 10}" for i in range(1, rows + 1)]
    return "\n".join(lines) + "\n"


def claims_csv(rows: int = 300) -> str:
    lines = ["patient_id,amount"]
    lines += [f"{i},{(i * 53) % 900 + 100}" for i in range(1, rows + 1, 2)]
    return "\n".join(lines) + "\n"


def notebook(*cells: str) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    return nbformat.writes(nb).encode()


def dp_query(sources: list[str], mechanism: str, *, join_on: str | None = None,
             filters: list[dict[str, Any]] | None = None, **measure: Any) -> PlanDocument:
    """The plan ``veil.dp.<mechanism>(...)`` publishes, built here to pin it at submission."""
    return parse_plan({"query": {"kind": "dp", "relation": {
        "sources": sources, "join_on": join_on, "filters": filters or []},
        "measure": {"mechanism": mechanism, **measure}}})


def aggregate_query(sources: list[str], by: list[str], *, join_on: str | None = None,
                    **aggregates: dict[str, Any]) -> PlanDocument:
    return parse_plan({"query": {"kind": "aggregate", "relation": {
        "sources": sources, "join_on": join_on, "filters": []}, "by": by,
        "aggregates": aggregates}})


def wait(client: Client, job_id: str, states: set[str], timeout: float = 180) -> dict:
    return client.wait(job_id, states, timeout_s=timeout)


FINAL = {"released", "failed", "rejected", "cancelled", "output_review"}


def serve_process(home: Path, port: int, log: Path,
                  db_url: str | None = None) -> subprocess.Popen[bytes]:
    """`veil serve` in its own process (to be killed), with a 2 s worker lease."""
    env = {**os.environ, "VEIL_WORKER_LEASE_S": "2"}
    if db_url is not None:
        env["VEIL_DATABASE_URL"] = db_url
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "veil", "serve", "--port", str(port),
                                 "--home", str(home)], stdout=fh, stderr=subprocess.STDOUT,
                                env=env)


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


@dataclass
class KillableServer:
    """A `veil serve` process on a fresh home with an admin, to SIGKILL and start again."""

    home: Path
    log: Path
    db_url: str | None
    admin_token: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = serve_process(self.home, self.port, self.log, self.db_url)
        wait_healthy(self.url)

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits for the process to be gone."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def world(self) -> World:
        from tests.conftest import LiveServer

        return make_world(LiveServer(self.url, None, self.admin_token))


def killable_server(tmp: Path, db_url: str | None = None) -> KillableServer:
    """A home under ``tmp`` with its admin (not started yet: call ``start``)."""
    from tests.conftest import _free_port
    from veil.identity import Role, create_user
    from veil.settings import Settings
    from veil.store import open_database

    home = tmp / "home"
    settings = Settings(home=home, database_url=db_url) if db_url else Settings(home=home)
    settings.ensure_dirs()
    db = open_database(settings.db_url)
    with db.transaction() as session:
        _, admin_token = create_user(session, "admin", role=Role.ADMIN, party=None, actor="t")
    db.dispose()
    return KillableServer(home, tmp / "log", db_url, admin_token, _free_port())
