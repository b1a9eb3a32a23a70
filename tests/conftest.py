"""Shared fixtures: a real Veil server on loopback, with identities.

With `VEIL_TEST_DATABASE_URL` set (see scripts/start-postgres.sh), every server started here
and every `database_url` fixture gets its own fresh database on that PostgreSQL server,
dropped afterwards; without it they use SQLite files in the test's temporary folder.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TEST_DATABASE_URL = os.environ.get("VEIL_TEST_DATABASE_URL") or None

# Browser tests drive Debian's chromium (scripts/setup.sh installs it; never `playwright
# install`). Without it they skip on a developer's machine but fail under CI, where a
# missing install step must not pass as green.
CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (scripts/setup.sh)")


@contextmanager
def fresh_database() -> Iterator[str | None]:
    """A new, empty PostgreSQL database for one test, or None (use SQLite) when not configured."""
    if TEST_DATABASE_URL is None:
        yield None
        return
    from sqlalchemy import create_engine, make_url, text

    base = make_url(TEST_DATABASE_URL)
    name = f"veil_t_{secrets.token_hex(6)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def database_url(tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database: PostgreSQL when configured, else SQLite."""
    with fresh_database() as url:
        yield url or f"sqlite:///{tmp_path / 'test.sqlite'}"


@dataclass
class LiveServer:
    url: str
    platform: object
    admin_token: str

    def client(self, token: str | None = None):
        from veil.sdk.client import Client

        return Client(self.url, token)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path, *, workers: int = 1, limits: object = None,
                 **settings_kw: object) -> Iterator[LiveServer]:
    from veil.settings import Settings

    with fresh_database() as url:
        if url is not None:
            settings_kw.setdefault("database_url", url)
        settings = Settings(home=home, **settings_kw)  # type: ignore[arg-type]
        yield from _serve(settings, workers=workers, limits=limits)


def _serve(settings: object, *, workers: int, limits: object) -> Iterator[LiveServer]:
    import uvicorn

    from veil.identity import Role, create_user
    from veil.server.app import create_app
    from veil.server.platform import create_platform
    from veil.tee.sandbox import SandboxLimits

    platform = create_platform(settings)  # type: ignore[arg-type]
    with platform.db.transaction() as session:
        _, admin_token = create_user(session, "admin", role=Role.ADMIN, party=None, actor="test")
    limits = limits or SandboxLimits(cpu_seconds=60, memory_bytes=2 * 1024**3, wall_seconds=120,
                           max_file_bytes=64 * 1024**2, output_bytes=128 * 1024**2)
    app = create_app(platform, workers=0)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    platform.start_workers(workers, limits)  # workers=0 still builds views
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", platform, admin_token)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        platform.close()


@pytest.fixture()
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    yield from start_server(tmp_path / "home")
