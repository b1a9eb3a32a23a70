"""Every endpoint x every role: who may do what (and that nobody gets raw data)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from tests.cleanroom.helpers import (
    FINAL,
    aggregate_query,
    claims_csv,
    make_world,
    notebook,
    upload_csv,
    visits_csv,
    wait,
)

NB = notebook("import veil\nv = veil.load('hospital/visits')\n"
              "veil.publish('n', veil.aggregate(v, by='region', n='count'))\n"
              "veil.publish('total', int(len(v)))")
PLANS = {"n": aggregate_query(["hospital/visits"], ["region"], n={"fn": "count"})}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import start_server

    tmp = tmp_path_factory.mktemp("authz")
    gen = start_server(tmp / "home")
    server = next(gen)
    w = make_world(server)
    ds = upload_csv(w.hospital, tmp, "visits", visits_csv())
    upload_csv(w.insurer, tmp, "claims", claims_csv())
    job = w.researcher.submit({"a.ipynb": NB}, entrypoint="a.ipynb", inputs=["hospital/visits"],
                              outputs=["n", "total"], plans=PLANS)
    w.hospital.approve(job["id"], job["digest"])
    job = wait(w.researcher, job["id"], FINAL)
    assert job["state"] == "output_review", job
    tokens = {
        "anonymous": None,
        "admin": server.admin_token,
        "owner": w.hospital.token,
        "other_provider": w.insurer.token,
        "consumer": w.researcher.token,
        "other_consumer": w.outsider.token,
    }
    yield server, tokens, ds, job
    with contextlib.suppress(StopIteration):
        next(gen)


def call(server, token: str | None, method: str, path: str, **kw) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, server.url + "/api/v1" + path, headers=headers, timeout=30,
                         **kw).status_code


ROLES = ["anonymous", "admin", "owner", "other_provider", "consumer", "other_consumer"]

# path template, method, body, expected status per role (in ROLES order)
MATRIX = [
    ("/me", "GET", None, [401, 200, 200, 200, 200, 200]),
    ("/admin/parties", "POST", {"name": "x{role}"}, [401, 201, 403, 403, 403, 403]),
    ("/admin/users", "POST", {"name": "u{role}", "role": "consumer", "party": "lab"},
     [401, 201, 403, 403, 403, 403]),
    ("/admin/audit", "GET", None, [401, 200, 403, 403, 403, 403]),
    ("/datasets", "GET", None, [401, 200, 200, 200, 200, 200]),
    ("/datasets/hospital/visits", "GET", None, [401, 200, 200, 404, 200, 404]),
    ("/datasets/hospital/visits/view", "GET", None, [401, 200, 200, 404, 200, 404]),
    # The owner's fidelity plots of a DP view (this dataset has none: 404 even for the owner).
    ("/datasets/hospital/visits/fidelity.png", "GET", None, [401, 403, 404, 404, 403, 403]),
    ("/datasets/{ds}/data", "PUT", None, [401, 403, 409, 404, 403, 403]),
    ("/jobs", "GET", None, [401, 200, 200, 200, 200, 200]),
    ("/jobs/{job}", "GET", None, [401, 200, 200, 404, 200, 404]),
    ("/jobs/{job}/bundle/a.ipynb", "GET", None, [401, 200, 200, 404, 200, 404]),
    ("/jobs/{job}/approve", "POST", {"digest": "sha256:00"}, [401, 403, 422, 404, 403, 403]),
    ("/jobs/{job}/cancel", "POST", None, [401, 403, 403, 403, 409, 404]),
    ("/jobs/{job}/outputs/n", "GET", None, [401, 403, 403, 404, 200, 404]),
    ("/jobs/{job}/outputs/total", "GET", None, [401, 403, 200, 404, 403, 404]),
    ("/jobs/{job}/outputs/nope/review", "POST", {"decision": "approve"},
     [401, 403, 404, 404, 403, 403]),
]


@pytest.mark.parametrize(("template", "method", "body", "expected"), MATRIX,
                         ids=[f"{m} {t}" for t, m, _, _ in MATRIX])
def test_endpoint_by_role(setup, template, method, body, expected) -> None:
    server, tokens, ds, job = setup
    for role, want in zip(ROLES, expected, strict=True):
        path = template.format(ds=ds["id"], job=job["id"], role=role.replace("_", ""))
        kw = {"json": {k: v.format(role=role.replace("_", "")) if isinstance(v, str) else v
                       for k, v in body.items()}} if body else {}
        if method == "PUT":
            kw = {"content": b"a,b\n1,2\n"}
        got = call(server, tokens[role], method, path, **kw)
        assert got == want, f"{role}: {method} {path} -> {got}, expected {want}"


def test_no_route_returns_raw_data(setup) -> None:
    server, _tokens, _, _ = setup
    spec = httpx.get(server.url + "/openapi.json").json()
    paths = " ".join(spec["paths"])
    assert "/raw" not in paths and "/download" not in paths
    dataset_gets = [p for p, ops in spec["paths"].items() if p.startswith("/api/v1/datasets")
                    and "get" in ops]
    # fidelity.png: plots for the dataset's own provider (authorised in the matrix above).
    assert sorted(dataset_gets) == ["/api/v1/datasets", "/api/v1/datasets/{owner}/{name}",
                                    "/api/v1/datasets/{owner}/{name}/fidelity.png",
                                    "/api/v1/datasets/{owner}/{name}/view"]


def test_bad_token_is_refused(setup) -> None:
    server, _, _, _ = setup
    assert call(server, "veil_not-a-token", "GET", "/me") == 401


def test_tokens_are_stored_hashed(setup, tmp_path: Path) -> None:
    server, tokens, _, _ = setup
    from sqlalchemy import select

    from veil.store.models import ApiToken

    with server.platform.db.transaction() as session:
        hashes = set(session.execute(select(ApiToken.token_hash)).scalars())
    assert tokens["consumer"] not in hashes
    assert all(len(h) == 64 for h in hashes)
