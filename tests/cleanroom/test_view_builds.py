"""Views are built in the background: the upload answers `building` at once, the view builder
makes the dataset `ready` (or `failed`, with a reason), and nothing else waits meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.cleanroom.helpers import killable_server, make_world, policy, upload_csv, visits_csv
from veil.catalog import views as views_module
from veil.sdk.client import ApiError, BuildFailed

SYNTHETIC = "\n[views.synthetic]\nepsilon = 1.0\nrows = 200\n"
BUDGET = "\n[budget]\nepsilon = 3.0\ndelta = 1e-6\n"
BOUNDS = 'bounds = { patient_id = [0, 5000], cost = [0, 600] }\n'


def test_upload_answers_building_and_the_builder_makes_it_ready(live_server,
                                                                tmp_path: Path) -> None:
    w = make_world(live_server)
    path = tmp_path / "visits.csv"
    path.write_text(visits_csv(2000))
    doc = BOUNDS + policy() + SYNTHETIC + BUDGET
    info = w.hospital.upload("visits", path, policy=doc, policy_format="toml", wait=False)
    assert info["status"] == "building" and info["views"] == []
    assert info["build"]["views"] == ["mock", "sample", "synthetic"]
    # Not visible to the consumer until its views exist.
    with pytest.raises(ApiError) as caught:
        w.researcher.dataset("hospital/visits")
    assert caught.value.status == 404
    seen: list[dict[str, Any]] = []
    ready = w.hospital.wait_ready("hospital/visits", progress=lambda r: seen.append(r),
                                  timeout_s=120)
    assert ready["status"] == "ready"
    assert ready["views"] == ["mock", "sample", "synthetic"]
    done = ready["build"]["done"]
    assert "reading" in done and "mock view" in done and "synthetic view" in done
    assert any(p.startswith("synthetic view: ") for p in done)  # the fit's own phases
    # The view's epsilon is charged to the dataset's ledger, for every consumer, and shown.
    spent = ready["view_info"]["synthetic"]["dp"]["epsilon"]
    budget = next(b for b in w.researcher.budgets() if b["dataset"] == "hospital/visits")
    assert budget["epsilon_left"] == pytest.approx(3.0 - spent, abs=1e-9)
    assert budget["views_epsilon"] == {"synthetic": pytest.approx(spent)}
    # The provider's full report: per-column and pairwise errors, warnings, PNG plots.
    report = ready["view_info"]["synthetic"]["fidelity"]
    assert {"ks", "tv", "corr_delta", "mean_corr_delta", "lost_relationships"} \
        <= set(report["relationships"])
    assert isinstance(report["warnings"], list)
    assert w.hospital.fidelity_plot("hospital/visits").startswith(b"\x89PNG")
    for other in (w.researcher, w.insurer):  # drawn from real data: the owner only
        with pytest.raises(ApiError) as caught:
            other.fidelity_plot("hospital/visits")
        assert caught.value.status in (403, 404)
    # The researcher's summary is DP-safe: outputs of the DP fit only, no real-data figures.
    public = w.researcher.dataset("hospital/visits")["view_info"]["synthetic"]
    assert set(public) == {"rows", "dp"}
    assert set(public["dp"]) == {"epsilon", "delta", "method", "rows", "spend",
                                 "modelled_pairs"}
    import veil.sdk

    veil.sdk.connect(live_server.url, w.researcher.token)
    frame = veil.sdk.load("hospital/visits", view="synthetic")
    assert frame.attrs["veil_fidelity"] == public["dp"]


def test_a_failed_build_says_why_and_the_provider_can_start_over(live_server, tmp_path: Path,
                                                                 monkeypatch) -> None:
    w = make_world(live_server)

    class Broken:
        name = "synthetic"

        def __init__(self, **_: Any) -> None:
            pass

        def observe(self, batch: Any) -> None:
            pass

        def build(self, schema: Any) -> pd.DataFrame:
            from veil.privacy.errors import SyntheticDataError

            raise SyntheticDataError("cannot build the mst model: a reason")

    monkeypatch.setitem(views_module.VIEW_BUILDERS, "synthetic", Broken)
    path = tmp_path / "visits.csv"
    path.write_text(visits_csv(300))
    doc = BOUNDS + policy() + SYNTHETIC
    with pytest.raises(BuildFailed, match="cannot build the mst model: a reason"):
        w.hospital.upload("visits", path, policy=doc, policy_format="toml")
    info = w.hospital.dataset("hospital/visits")
    assert info["status"] == "failed" and info["views"] == []
    assert "a reason" in info["build"]["reason"]
    with pytest.raises(ApiError):  # failed datasets are not served to consumers
        w.researcher.view("hospital/visits")
    monkeypatch.undo()
    again = w.hospital.upload("visits", path, policy=doc, policy_format="toml")  # same name
    assert again["status"] == "ready" and "synthetic" in again["views"]


def test_view_config_errors_list_every_column_with_a_snippet_and_keep_the_draft(
        live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    rng = np.random.default_rng(1)
    n = 400
    frame = pd.DataFrame({
        "patient_id": np.arange(n), "region": rng.choice(["north", "south", "east"], n),
        "sex": rng.choice([1.0, 2.0], n), "age": rng.integers(18, 90, n),
        "cost": rng.gamma(2.0, 100.0, n), "note": [f"free text {i}" for i in range(n)],
    })
    path = tmp_path / "v.csv"
    frame.to_csv(path, index=False)
    base = policy().replace('categories = { region = ["north", "south", "east"] }\n', "")
    doc = base + "\n[views.synthetic]\nepsilon = 0.5\nrows = 100\n"
    with pytest.raises(ApiError) as caught:
        w.hospital.upload("visits", path, policy=doc, policy_format="toml")
    assert caught.value.status == 422
    detail = caught.value.detail
    for needed in ("'sex' has only 2 distinct numbers", "'region' is text without public "
                   "categories", "too small for 400 rows", "(age, cost)"):
        assert needed in detail, needed
    assert "bounds = { age = [18, 89], cost = [" in detail and "sex = [1, 2]" in detail
    assert w.hospital.dataset("hospital/visits")["status"] == "draft"  # nothing lost
    # Paste the snippet's lines (with the provider's own public values) and it builds.
    fixed = ('bounds = { patient_id = [0, 1000], age = [0, 120], cost = [0, 5000] }\n'
             'categories = { sex = [1, 2], region = ["north", "south", "east"] }\n'
             + base
             + "\n[views.synthetic]\nepsilon = 0.5\nrows = 100\nexclude = [\"note\"]\n")
    info = w.hospital.upload("visits", path, policy=fixed, policy_format="toml")
    assert info["status"] == "ready"
    view = pd.read_parquet(__import__("io").BytesIO(w.researcher.view("hospital/visits",
                                                                       "synthetic")[1]))
    assert set(view["sex"].dropna().unique()) <= {1.0, 2.0}  # a category, never decimals
    assert view["note"].isna().all()


@pytest.mark.parametrize("extra, message", [
    ('bounds = { cost = [0, 600] }\ncategories = { cost = [1, 2] }\n',
     "both categories and bounds"),
    ('categories = { code = [1, "1"] }\n', "mixes kinds of values"),
    ('categories = { flag = [true, 1] }\n', "mixes kinds of values"),
    ('categories = { code = ["a", "a"] }\n', "must not repeat"),
])
def test_conflicting_public_categories_are_refused(live_server, tmp_path: Path, extra: str,
                                                   message: str) -> None:
    w = make_world(live_server)
    doc = extra + policy().replace('categories = { region = ["north", "south", "east"] }\n', "")
    with pytest.raises(ApiError) as caught:
        upload_csv_doc(w.hospital, tmp_path, doc)
    assert caught.value.status == 422 and message in caught.value.detail


def test_categories_of_the_wrong_kind_for_the_column_are_refused(live_server,
                                                                 tmp_path: Path) -> None:
    w = make_world(live_server)
    doc = BOUNDS + policy().replace('region = ["north", "south", "east"]',
                                    'region = [1, 2, 3]') + SYNTHETIC
    with pytest.raises(ApiError) as caught:
        upload_csv_doc(w.hospital, tmp_path, doc)
    assert "categories.region are numbers but column 'region' holds text" in caught.value.detail


def test_epsilon_too_small_names_the_smallest_that_works(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    doc = policy() + "\n[views.synthetic]\nepsilon = 0.1\nrows = 100\n"
    with pytest.raises(ApiError) as caught:
        upload_csv_doc(w.hospital, tmp_path, doc)
    detail = caught.value.detail
    assert "epsilon 0.1 is too small for 300 rows" in detail and "need epsilon >= " in detail
    need = float(detail.split("need epsilon >= ")[1].split(";")[0])
    assert need > 0.1
    ok = policy() + f"\n[views.synthetic]\nepsilon = {need * 1.5:.3f}\nrows = 100\n"
    w2 = w.hospital
    info = w2.upload("visits2", tmp_path / "visits.csv", policy=ok, policy_format="toml")
    assert info["status"] == "ready"


def upload_csv_doc(client: Any, tmp: Path, doc: str, name: str = "visits") -> dict[str, Any]:
    path = tmp / f"{name}.csv"
    path.write_text(visits_csv())
    return client.upload(name, path, policy=doc, policy_format="toml")


@pytest.mark.slow
def test_other_requests_stay_fast_while_a_large_view_fits(live_server, tmp_path: Path) -> None:
    """A 10^6-row upload with a synthetic view: readers see no 5xx and short latencies."""
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "small", visits_csv())
    rng = np.random.default_rng(2)
    n = 1_000_000
    big = pd.DataFrame({"patient_id": np.arange(n), "region": rng.choice(["north", "south"], n),
                        "age": rng.integers(18, 90, n)})
    big["cost"] = rng.gamma(2.0, 100.0, n) + 3 * big["age"]
    path = tmp_path / "big.csv"
    big.to_csv(path, index=False)
    doc = ('bounds = { patient_id = [0, 1000000], age = [0, 120] }\n'
           + policy().replace('"east"', '"east", "west"') + SYNTHETIC)
    url, consumer = live_server.url, w.researcher.token
    latencies: list[float] = []
    statuses: list[int] = []
    done = threading.Event()

    def read(paths: Iterator[str]) -> None:
        headers = {"Authorization": f"Bearer {consumer}"}
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
            for p in paths:
                if done.is_set():
                    return
                start = time.monotonic()
                statuses.append(http.get(p).status_code)
                latencies.append(time.monotonic() - start)
                time.sleep(0.05)

    def forever() -> Iterator[str]:
        while True:
            yield from ("/api/v1/datasets", "/api/v1/datasets/hospital/small/view",
                        "/api/v1/budgets", "/healthz")

    with ThreadPoolExecutor(max_workers=4) as pool:
        readers = [pool.submit(read, forever()) for _ in range(3)]
        started = time.monotonic()
        info = w.hospital.upload("big", path, policy=doc, policy_format="toml", wait=False)
        assert info["status"] == "building"
        answered = time.monotonic() - started
        ready = w.hospital.wait_ready("hospital/big", timeout_s=300)
        done.set()
        for r in readers:
            r.result()
    assert ready["status"] == "ready" and "synthetic" in ready["views"]
    assert ready["rows"] == n
    assert statuses and all(s < 500 for s in statuses), sorted(set(statuses))
    assert max(latencies) < 3.0, max(latencies)
    print(f"{path.stat().st_size / 1e6:.0f} MB upload answered in {answered:.2f} s; "
          f"build {ready['build']['seconds']} s; "
          f"{len(latencies)} reads meanwhile, p50 {np.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")


@pytest.mark.slow
def test_a_killed_builder_is_taken_over_and_charges_once(tmp_path: Path,
                                                          database_url: str) -> None:
    """SIGKILL the server mid-fit: on restart the stale build is claimed again (attempt 2),
    becomes ready, and its epsilon is charged to the ledger once."""
    server = killable_server(tmp_path, database_url)
    try:
        server.start()
        w = server.world()
        path = tmp_path / "visits.csv"
        path.write_text(visits_csv(5000))
        slow_fit = SYNTHETIC + 'method = "mst"\n'  # MST's fit takes seconds: time to kill it
        doc = BOUNDS + policy() + slow_fit + BUDGET
        w.hospital.upload("visits", path, policy=doc, policy_format="toml", wait=False)
        deadline = time.monotonic() + 120
        while not (w.hospital.dataset("hospital/visits")["build"].get("phase") or "") \
                .startswith("synthetic view"):
            assert time.monotonic() < deadline, w.hospital.dataset("hospital/visits")["build"]
            time.sleep(0.05)
        server.kill()
        server.start()
        ready = w.hospital.wait_ready("hospital/visits", timeout_s=300)
        assert ready["status"] == "ready" and "synthetic" in ready["views"]
        assert ready["build"]["attempts"] == 2
        spent = ready["view_info"]["synthetic"]["dp"]["epsilon"]
        budget = next(b for b in w.researcher.budgets() if b["dataset"] == "hospital/visits")
        assert budget["epsilon_left"] == pytest.approx(3.0 - spent, abs=1e-9)
        assert len(w.researcher.view("hospital/visits", "synthetic")[1]) > 0
    finally:
        server.kill()
