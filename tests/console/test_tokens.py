"""Token administration over the API and the CLI: list, issue, revoke, rotate, recover."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cleanroom.helpers import make_world
from tests.console.helpers import csrf_of, signin
from veil.sdk.client import ApiError


def test_list_revoke_rotate(live_server) -> None:
    w = make_world(live_server)
    tokens = w.admin.tokens()
    assert {t["user"] for t in tokens} >= {"admin", "alice", "carol"}
    assert all("token" not in t and "hash" not in str(t) for t in tokens)
    assert {u["name"]: u["party"] for u in w.admin.users()}["alice"] == "hospital"
    assert "lab" in [p["name"] for p in w.admin.parties()]

    carol = next(t for t in tokens if t["user"] == "carol")
    session = signin(live_server.url, w.researcher.token)
    assert session.get("/consumer").status_code == 200
    rotated = w.admin.rotate_token(carol["id"])
    assert rotated["user"] == "carol" and rotated["token"].startswith("veil_")
    with pytest.raises(ApiError) as refused:
        w.researcher.me()
    assert refused.value.status == 401
    # The console session made from the old token ended with it.
    assert session.get("/consumer").status_code == 303
    fresh = w.researcher.with_token(rotated["token"])
    assert fresh.me()["user"] == "carol"

    issued = w.admin.issue_token("dave")
    assert w.outsider.with_token(issued["token"]).me()["user"] == "dave"
    w.admin.revoke_token(issued["id"])
    with pytest.raises(ApiError):
        w.outsider.with_token(issued["token"]).me()
    assert w.outsider.me()["user"] == "dave"  # his first token is untouched
    with pytest.raises(ApiError) as twice:
        w.admin.revoke_token(issued["id"])
    assert twice.value.status == 409
    with pytest.raises(ApiError) as missing:
        w.admin.revoke_token("0" * 32)
    assert missing.value.status == 404
    with pytest.raises(ApiError) as forbidden:
        w.hospital.tokens()
    assert forbidden.value.status == 403


def test_console_rotation_shows_the_new_token_once(live_server) -> None:
    w = make_world(live_server)
    bob = next(t for t in w.admin.tokens() if t["user"] == "bob")
    admin = signin(live_server.url, live_server.admin_token)
    page = admin.post(f"/admin/tokens/{bob['id']}/rotate",
                      data={"csrf": csrf_of(admin.get("/admin").text)})
    assert page.status_code == 200
    new = page.text.split('id="new-token">')[1].split("<")[0]
    assert w.insurer.with_token(new).me()["user"] == "bob"
    assert new not in admin.get("/admin").text  # shown once, never listed
    issued = admin.post("/admin/tokens", data={"user": "dave", "csrf": csrf_of(
        admin.get("/admin").text)})
    token = issued.text.split('id="new-token">')[1].split("<")[0]
    assert w.outsider.with_token(token).me()["user"] == "dave"
    unknown = admin.post("/admin/tokens", data={"user": "nobody", "csrf": csrf_of(
        admin.get("/admin").text)})
    assert unknown.status_code == 404 and "text/html" in unknown.headers["content-type"]


def test_admin_recover_from_the_host(tmp_path: Path) -> None:
    from veil.cli import app

    home = tmp_path / "home"
    runner = CliRunner()
    missing = runner.invoke(app, ["admin", "recover", "--home", str(home)])
    assert missing.exit_code == 1 and "no Veil state" in missing.output
    first = runner.invoke(app, ["admin", "init", "--home", str(home)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["admin", "recover", "--home", str(home)])
    assert again.exit_code == 0, again.output
    token = again.output.strip().splitlines()[-1]
    assert token.startswith("veil_") and token != first.output.strip()
    wrong = runner.invoke(app, ["admin", "recover", "--home", str(home), "--name", "eve"])
    assert wrong.exit_code == 1 and "no admin named" in wrong.output

    from veil.identity import resolve
    from veil.settings import Settings
    from veil.store import open_database

    db = open_database(Settings(home=home).db_url)
    try:
        with db.transaction() as session:
            caller = resolve(session, token)
            assert caller is not None and caller.role.value == "admin"
    finally:
        db.dispose()
