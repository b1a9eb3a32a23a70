"""One error tree, one handler: each kind of failure answers its status, never a stray 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from veil import audit
from veil.audit import AuditChainBroken
from veil.catalog.errors import SchemaRejected, UploadTooLarge
from veil.errors import VeilError, status_for
from veil.identity import Forbidden, NotFound
from veil.jobs.lifecycle import StaleState
from veil.names import InvalidName
from veil.privacy.errors import CostMismatchError
from veil.release.manifest import ManifestError
from veil.server.app import FOREIGN_STATUS
from veil.store import open_database
from veil.store.blobs import BlobError
from veil.store.models import AuditEvent
from veil.tee.sandbox import SandboxError, SandboxUnavailable

CASES: list[tuple[Exception, int]] = [
    (BlobError("invalid blob key 'x'"), 422),
    (AuditChainBroken(7), 409),
    (SandboxError("bubblewrap failed"), 503),
    (SandboxUnavailable("bwrap is missing"), 503),
    (ManifestError("output manifest is malformed"), 422),
    (NotFound("no such job visible to you"), 404),
    (Forbidden("only consumers submit jobs"), 403),
    (UploadTooLarge("upload exceeds the limit"), 413),
    (SchemaRejected(["column 'a' missing"]), 422),
    (InvalidName("invalid output name 'x'"), 422),
    (StaleState("lost the race"), 409),
    (CostMismatchError("declared cost differs"), 422),
]


@pytest.mark.parametrize("exc, status", CASES, ids=lambda v: type(v).__name__)
def test_status_is_found_by_the_mro(exc: Exception, status: int) -> None:
    assert status_for(exc, FOREIGN_STATUS) == status


def test_every_request_error_is_a_veil_error_or_a_listed_foreign_one() -> None:
    for exc, _ in CASES:
        assert isinstance(exc, (VeilError, *FOREIGN_STATUS))
    assert status_for(RuntimeError("secret=hunter2")) == 500


@pytest.fixture()
def raising_server(tmp_path: Path) -> Iterator[str]:
    """The real app on loopback, plus one route that raises whatever the test names."""
    import uvicorn

    from tests.conftest import _free_port
    from veil.server.app import create_app
    from veil.server.platform import create_platform
    from veil.settings import Settings

    platform = create_platform(Settings(home=tmp_path / "home"))
    app = create_app(platform, workers=0)
    by_name = {type(exc).__name__: exc for exc, _ in CASES}
    by_name["RuntimeError"] = RuntimeError("token=veil_secret")

    @app.get("/raise/{name}")
    def raise_it(name: str) -> None:
        raise by_name[name]

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    platform.close()


def test_each_error_answers_its_status_over_http(raising_server: str) -> None:
    for exc, status in CASES:
        response = httpx.get(f"{raising_server}/raise/{type(exc).__name__}")
        assert response.status_code == status, type(exc).__name__
        assert response.json() == {"detail": str(exc)}
    response = httpx.get(f"{raising_server}/raise/RuntimeError")
    assert response.status_code == 500 and "veil_secret" not in response.text


def _tamper(db, seq: int) -> None:
    with db.transaction() as session:
        session.execute(update(AuditEvent).where(AuditEvent.seq == seq)
                        .values(detail={"name": "forged"}))


def test_verify_chain_names_the_first_broken_event(database_url: str) -> None:
    db = open_database(database_url)
    with db.transaction() as session:
        for i in range(4):
            audit.record(session, actor="test", action="x.happened", subject=str(i),
                         detail={"i": i})
    with db.transaction() as session:
        assert audit.verify_chain(session) == 4
    _tamper(db, 3)
    with db.transaction() as session, pytest.raises(AuditChainBroken) as info:
        audit.verify_chain(session)
    assert info.value.seq == 3
    db.dispose()


def test_admin_audit_reports_a_tampered_chain(live_server) -> None:
    admin = httpx.Client(base_url=live_server.url,
                         headers={"Authorization": f"Bearer {live_server.admin_token}"})
    for name in ("hospital", "lab"):
        admin.post("/api/v1/admin/parties", json={"name": name}).raise_for_status()
    intact = admin.get("/api/v1/admin/audit").json()
    assert intact["intact"] is True and intact["events"] >= 4
    _tamper(live_server.platform.db, 2)
    response = admin.get("/api/v1/admin/audit")
    assert response.status_code == 200
    assert response.json() == {"intact": False, "broken_at": 2}
