"""A real Veil server on loopback for the benchmarks: platform, first admin, uvicorn thread.

The benches are scripts (`python bench/x.py`), so this sibling module is on their path.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from veil.identity import Role, create_user
from veil.sdk.client import Client
from veil.server.app import create_app
from veil.server.platform import create_platform
from veil.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(home: Path, *, workers: int = 1, worker_poll_s: float | None = 0.05
            ) -> Iterator[Client]:
    """Serve a fresh platform under `home`; yields the first admin's client, stops on exit."""
    settings = Settings(home=home) if worker_poll_s is None else \
        Settings(home=home, worker_poll_s=worker_poll_s)
    platform = create_platform(settings)
    with platform.db.transaction() as session:
        _, admin_token = create_user(session, "admin", role=Role.ADMIN, party=None, actor="bench")
    server = uvicorn.Server(uvicorn.Config(create_app(platform, workers=workers),
                                           host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield Client(f"http://127.0.0.1:{server.config.port}", admin_token)
    finally:
        server.should_exit = True
        platform.close()
