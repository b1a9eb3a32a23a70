"""Bad input over HTTP: a clear refusal, and nothing half-stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cleanroom.helpers import make_world, notebook, policy, upload_csv, visits_csv
from veil.sdk.client import ApiError


def _blob_files(server) -> list[Path]:
    root = server.platform.settings.blob_dir
    return [p for p in root.rglob("*") if p.is_file()]


def _dataset_status(client, name: str) -> str | None:
    try:
        return client.dataset(name)["status"]
    except ApiError:
        return None


def test_malformed_csv_is_refused_and_nothing_stored(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    bad = "patient_id,region\n1,north\n2,south,extra,fields\n3\n"
    with pytest.raises(ApiError) as err:
        upload_csv(w.hospital, tmp_path, "visits", bad)
    assert err.value.status == 422
    assert "north" not in err.value.detail and "extra" not in err.value.detail
    assert _blob_files(live_server) == []
    assert _dataset_status(w.hospital, "hospital/visits") == "draft"
    assert w.researcher.datasets() == []


def test_upload_over_the_limit(tmp_path: Path) -> None:
    from tests.conftest import start_server

    gen = start_server(tmp_path / "home", workers=0, max_upload_bytes=10_000)
    server = next(gen)
    try:
        w = make_world(server)
        with pytest.raises(ApiError) as err:
            upload_csv(w.hospital, tmp_path, "visits", visits_csv(2000))
        assert err.value.status == 413
        assert _blob_files(server) == []
    finally:
        next(gen, None)


def test_schema_rejected_by_policy(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    doc = policy() + '\n[schema]\ncolumns = [{ name = "patient_id", type = "int" }]\n' \
                     'forbidden = ["ssn"]\n'
    path = tmp_path / "v.csv"
    path.write_text("patient_id,ssn\n1,123-45-6789\n")
    with pytest.raises(ApiError) as err:
        w.hospital.upload("visits", path, policy=doc, policy_format="toml")
    assert err.value.status == 422 and "ssn" in err.value.detail
    assert "123-45" not in err.value.detail
    assert _blob_files(live_server) == []


def test_unknown_policy_field_is_an_error(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    path = tmp_path / "v.csv"
    path.write_text(visits_csv(10))
    with pytest.raises(ApiError) as err:
        w.hospital.upload("visits", path, policy=policy() + "\nsurprise = true\n",
                          policy_format="toml")
    assert err.value.status == 422 and "surprise" in err.value.detail
    assert _dataset_status(w.hospital, "hospital/visits") is None


def test_notebook_that_is_not_json(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv(50))
    with pytest.raises(ApiError) as err:
        w.researcher.submit({"a.ipynb": b"{not json"}, entrypoint="a.ipynb",
                            inputs=["hospital/visits"])
    assert err.value.status == 422 and "not valid JSON" in err.value.detail
    assert w.researcher.jobs() == []


@pytest.mark.parametrize("dataset", ["insurer/claims", "nobody/nothing"])
def test_job_naming_a_dataset_it_may_not_use(live_server, tmp_path: Path, dataset: str) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv(50))
    claims = tmp_path / "c.csv"
    claims.write_text("patient_id\n1\n")
    w.insurer.upload("claims", claims, policy=policy().replace('"lab"', '"other"'),
                     policy_format="toml")
    with pytest.raises(ApiError) as err:
        w.researcher.submit({"a.py": b"import veil\n"}, entrypoint="a.py",
                            inputs=["hospital/visits", dataset])
    assert err.value.status == 403 and dataset in err.value.detail
    assert w.researcher.jobs() == []


def test_wrong_digest_is_not_an_approval(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv(50))
    job = w.researcher.submit({"a.py": b"import veil\n"}, entrypoint="a.py",
                              inputs=["hospital/visits"])
    with pytest.raises(ApiError) as err:
        w.hospital.approve(job["id"], "sha256:" + "0" * 64)
    assert err.value.status == 422
    assert w.researcher.job(job["id"])["state"] == "pending_approval"


def test_unsupported_file_type(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    path = tmp_path / "v.xlsx"
    path.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ApiError) as err:
        w.hospital.upload("visits", path, policy=policy(), policy_format="toml")
    assert err.value.status == 422
    assert _blob_files(live_server) == []


def test_empty_notebook_cells_still_digest(tmp_path: Path) -> None:
    from veil.jobs.bundle import make_bundle

    nb = notebook("print(1)")
    a = make_bundle({"a.ipynb": nb}, entrypoint="a.ipynb", inputs=["h/v"]).digest
    assert a.startswith("sha256:") and len(a) == 71


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_infinite_floats_are_refused_and_nothing_stored(live_server, tmp_path: Path,
                                                        value: str) -> None:
    """±inf has no meaning in a view's range, in JSON statistics or under DP clamping."""
    w = make_world(live_server)
    rows = "".join(f"{i},{value if i == 7 else i * 1.5}\n" for i in range(40))
    with pytest.raises(ApiError) as err:
        upload_csv(w.hospital, tmp_path, "visits", "patient_id,cost\n" + rows)
    assert err.value.status == 422
    assert "'cost'" in err.value.detail and "infinite" in err.value.detail
    assert _blob_files(live_server) == []
    assert _dataset_status(w.hospital, "hospital/visits") == "draft"


def test_floats_at_the_edge_of_the_range_get_a_finite_mock_view(live_server,
                                                                tmp_path: Path) -> None:
    import io
    import math

    import pandas as pd

    w = make_world(live_server)
    edge = ["1.797e308", "-1.797e308", "0", "2.5"]
    rows = "".join(f"{i},{edge[i % 4]}\n" for i in range(40))
    info = upload_csv(w.hospital, tmp_path, "visits", "patient_id,cost\n" + rows)
    assert info["rows"] == 40 and "mock" in info["views"]
    _, data = w.researcher.view("hospital/visits", kind="mock")
    costs = pd.read_parquet(io.BytesIO(data))["cost"].dropna()
    assert len(costs) > 0 and all(math.isfinite(c) for c in costs)


def test_digest_does_not_depend_on_the_order_of_inputs_or_outputs() -> None:
    from veil.jobs.bundle import BundleError, make_bundle

    nb = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    a = make_bundle({"a.ipynb": nb}, entrypoint="a.ipynb", inputs=["h/v", "i/c"],
                    outputs=["x", "y"])
    b = make_bundle({"a.ipynb": nb}, entrypoint="a.ipynb", inputs=["i/c", "h/v"],
                    outputs=["y", "x"])
    assert a.digest == b.digest and a.inputs == ("h/v", "i/c")
    with pytest.raises(BundleError, match="declared twice"):
        make_bundle({"a.ipynb": nb}, entrypoint="a.ipynb", inputs=["h/v"], outputs=["x", "x"])
