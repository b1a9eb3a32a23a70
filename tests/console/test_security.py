"""Console security over plain HTTP: sessions, cookie flags, CSRF, CSP, roles, escaping."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.cleanroom.helpers import make_world, notebook, upload_csv, visits_csv
from tests.console.helpers import csrf_of, signin

XSS = "<script>alert(1)</script>"


@pytest.fixture()
def world(live_server):
    return make_world(live_server)


def test_root_redirects_to_signin_and_pages_need_a_session(live_server) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        root = http.get("/", follow_redirects=False)
        assert root.status_code == 303 and root.headers["location"] == "/signin"
        for path in ("/provider", "/consumer", "/admin", "/audit"):
            assert http.get(path, follow_redirects=False).status_code == 303
        page = http.get("/signin")
        assert page.status_code == 200 and "API token" in page.text


def test_session_cookie_flags_and_security_headers(live_server) -> None:
    with httpx.Client(base_url=live_server.url, follow_redirects=False) as http:
        form = http.get("/signin")
        csp = form.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert form.headers["x-frame-options"] == "DENY"
        assert form.headers["x-content-type-options"] == "nosniff"
        signed = http.post("/signin", data={"token": live_server.admin_token,
                                            "csrf": csrf_of(form.text)})
        assert signed.status_code == 303 and signed.headers["location"] == "/admin"
        cookie = next(v for k, v in signed.headers.multi_items()
                      if k == "set-cookie" and v.startswith("veil_session="))
        flags = cookie.lower()
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        assert "secure" not in flags  # plain HTTP here; Secure is set when the request is TLS
        assert live_server.admin_token not in cookie  # the cookie is a session, not the token
        # The API itself answers with the same CSP.
        assert "default-src 'self'" in http.get("/healthz").headers["content-security-policy"]


def test_secure_flag_over_tls(live_server) -> None:
    """Behind TLS (here: the scheme a TLS-terminating proxy reports) the cookie is Secure."""
    from fastapi.testclient import TestClient

    from veil.server.app import create_app

    app = create_app(live_server.platform, workers=0)  # type: ignore[arg-type]
    http = TestClient(app, base_url="https://console.test")  # no lifespan: the platform is shared
    form = http.get("/signin")
    assert "secure" in form.headers["set-cookie"].lower()
    signed = http.post("/signin", data={"token": live_server.admin_token,
                                        "csrf": csrf_of(form.text)}, follow_redirects=False)
    assert "secure" in signed.headers["set-cookie"].lower()


def test_signin_refuses_bad_token_and_missing_csrf(live_server) -> None:
    with httpx.Client(base_url=live_server.url, follow_redirects=False) as http:
        form = http.get("/signin")
        bad = http.post("/signin", data={"token": "veil_nope", "csrf": csrf_of(form.text)})
        assert bad.status_code == 401 and "not valid" in bad.text
        assert "veil_session" not in bad.headers.get("set-cookie", "")
        no_csrf = http.post("/signin", data={"token": live_server.admin_token})
        assert no_csrf.status_code == 403 and "veil_session" not in str(no_csrf.headers)
        wrong = http.post("/signin", data={"token": live_server.admin_token, "csrf": "x" * 43})
        assert wrong.status_code == 403


def test_forms_refuse_missing_or_wrong_csrf(live_server, world) -> None:
    admin = signin(live_server.url, live_server.admin_token)
    tokens = world.admin.tokens()
    target = next(t for t in tokens if t["user"] == "dave")
    for data in ({}, {"csrf": "wrong"}):
        refused = admin.post(f"/admin/tokens/{target['id']}/revoke", data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
        refused = admin.post("/admin/parties", data={"name": "sneaky", **data})
        assert refused.status_code == 403
    assert world.outsider.me()["user"] == "dave"  # still valid: nothing was revoked
    assert "sneaky" not in [p["name"] for p in world.admin.parties()]
    # A session's CSRF token does not work for another session.
    other = signin(live_server.url, live_server.admin_token)
    theirs = csrf_of(other.get("/admin").text)
    assert admin.post("/admin/parties", data={"name": "sneaky", "csrf": theirs}) \
        .status_code == 403
    # With the right one, the action happens.
    ok = admin.post("/admin/parties", data={"name": "fine", "csrf": csrf_of(admin.get(
        "/admin").text)})
    assert ok.status_code == 303
    assert "fine" in [p["name"] for p in world.admin.parties()]


def test_signout_ends_the_session(live_server) -> None:
    admin = signin(live_server.url, live_server.admin_token)
    page = admin.get("/admin")
    assert admin.post("/signout", data={"csrf": csrf_of(page.text)}).status_code == 303
    admin.cookies.clear()
    # The old cookie value no longer works either (it was deleted server-side).
    assert admin.get("/admin").status_code == 303


def test_consumer_cannot_reach_provider_or_admin_pages(live_server, world, tmp_path) -> None:
    upload_csv(world.hospital, tmp_path, "visits", visits_csv(60))
    job = world.researcher.submit({"a.ipynb": notebook("import veil")}, entrypoint="a.ipynb",
                                  inputs=["hospital/visits"])
    consumer = signin(live_server.url, world.researcher.token)
    for path in ("/provider", f"/provider/jobs/{job['id']}", "/admin"):
        response = consumer.get(path)
        assert response.status_code == 403, path
        assert "text/html" in response.headers["content-type"]
    csrf = csrf_of(consumer.get("/consumer").text)
    approve = consumer.post(f"/provider/jobs/{job['id']}/approve",
                            data={"csrf": csrf, "digest": job["digest"]})
    assert approve.status_code == 403
    assert world.hospital.job(job["id"])["approvals"] == []
    # A provider of another party cannot open the job either (it does not read their data).
    insurer = signin(live_server.url, world.insurer.token)
    assert insurer.get(f"/provider/jobs/{job['id']}").status_code == 404
    # A provider is not a consumer or an admin.
    assert insurer.get("/consumer").status_code == 403
    assert insurer.get("/admin").status_code == 403
    # Another consumer cannot see the job.
    outsider = signin(live_server.url, world.outsider.token)
    assert outsider.get(f"/consumer/jobs/{job['id']}").status_code == 404


def test_xss_in_dataset_names_and_notebook_cells_is_escaped(live_server, world,
                                                            tmp_path: Path) -> None:
    upload_csv(world.hospital, tmp_path, "visits", visits_csv(60))
    cell = f"# {XSS}\nprint('</pre><img src=x onerror=alert(2)>')"
    job = world.researcher.submit(
        {"a.ipynb": notebook("import veil", cell), "helper.py": f"X = '{XSS}'\n".encode()},
        entrypoint="a.ipynb", inputs=["hospital/visits"])
    provider = signin(live_server.url, world.hospital.token)
    page = provider.get(f"/provider/jobs/{job['id']}")
    assert page.status_code == 200
    assert XSS not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;" in page.text and "onerror" in page.text  # shown, inert
    # A dataset name cannot carry markup (names have a grammar), and the API refuses it.
    refused = httpx.post(f"{live_server.url}/api/v1/datasets",
                         headers={"Authorization": f"Bearer {world.hospital.token}"},
                         json={"name": XSS, "policy": "consumers = []"})
    assert refused.status_code == 422
    # A party name the admin types is escaped on every page that shows it.
    admin = signin(live_server.url, live_server.admin_token)
    csrf = csrf_of(admin.get("/admin").text)
    admin.post("/admin/parties", data={"name": XSS, "csrf": csrf})
    shown = admin.get("/admin").text
    assert XSS not in shown


def test_error_pages_escape_messages(live_server, world) -> None:
    admin = signin(live_server.url, live_server.admin_token)
    csrf = csrf_of(admin.get("/admin").text)
    response = admin.post("/admin/users", data={"name": XSS, "role": "provider",
                                                 "party": "hospital", "csrf": csrf})
    assert response.status_code == 422 and XSS not in response.text


def test_offline_api_docs(live_server) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        docs = http.get("/docs")
        assert docs.status_code == 200 and "cdn" not in docs.text.lower()
        assert "<script>" not in docs.text  # no inline script, only files from us
        for src in ("/static/docs/swagger-ui-bundle.js", "/static/docs/swagger-ui.css",
                    "/static/console/swagger-init.js", "/static/docs/redoc.standalone.js"):
            asset = http.get(src)
            assert asset.status_code == 200 and len(asset.content) > 100, src
        redoc = http.get("/redoc")
        assert redoc.status_code == 200 and "/static/docs/redoc.standalone.js" in redoc.text
        assert http.get("/openapi.json").json()["info"]["title"] == "Veil"


def test_approval_page_diffs_against_the_version_approved_before(live_server, world,
                                                                 tmp_path: Path) -> None:
    upload_csv(world.hospital, tmp_path, "visits", visits_csv(60))
    first = world.researcher.submit({"a.ipynb": notebook("import veil", "x = 1")},
                                    entrypoint="a.ipynb", inputs=["hospital/visits"])
    world.hospital.approve(first["id"], first["digest"])
    second = world.researcher.submit({"a.ipynb": notebook("import veil", f"x = '{XSS}'")},
                                     entrypoint="a.ipynb", inputs=["hospital/visits"])
    provider = signin(live_server.url, world.hospital.token)
    page = provider.get(f"/provider/jobs/{second['id']}").text
    section = page.split('id="diff"')[1].split("</section>")[0]
    assert first["id"] in section and XSS not in section
    text = re.sub(r"<[^>]+>", "", section)
    assert "-x = 1" in text and "+x = '&lt;script&gt;" in text
    # The first job has nothing earlier to compare with.
    assert 'id="diff"' not in provider.get(f"/provider/jobs/{first['id']}").text
