"""Each role's main flow in a real browser (Debian's chromium, headless, via Playwright)
against a real `veil serve` app on loopback, with jobs run in the real sandbox.

Set VEIL_CONSOLE_SCREENSHOTS=docs/console to save a screenshot of each page on the way.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.cleanroom.helpers import (
    FINAL,
    aggregate_query,
    make_world,
    notebook,
    upload_csv,
    visits_csv,
    wait,
)
from tests.conftest import start_server
from veil.sdk.client import ApiError

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed (scripts/setup.sh)")]
SHOTS = os.environ.get("VEIL_CONSOLE_SCREENSHOTS")

ANALYSIS = notebook(
    "import veil\nv = veil.load('hospital/visits')",
    "by_region = veil.aggregate(v, by='region', n=('patient_id', 'count_distinct'))\n"
    "veil.publish('by_region', by_region)",
    "# row-level: one row per patient, which a reviewer must stop\n"
    "veil.publish('people', v[['patient_id', 'cost']].head(60))",
)
BY_REGION = aggregate_query(["hospital/visits"], ["region"],
                            n={"fn": "count_distinct", "column": "patient_id"})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from start_server(tmp_path_factory.mktemp("console") / "home")


@pytest.fixture(scope="module")
def world(served: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    w = make_world(served)
    upload_csv(w.hospital, tmp_path_factory.mktemp("data"), "visits", visits_csv())
    return w


@pytest.fixture(scope="module")
def ran(world: Any) -> dict[str, Any]:
    """A job approved over the API and run in the sandbox, now in output review."""
    job = world.researcher.submit({"analysis.ipynb": ANALYSIS}, entrypoint="analysis.ipynb",
                                  inputs=["hospital/visits"], outputs=["by_region", "people"],
                                  plans={"by_region": BY_REGION})
    world.hospital.approve(job["id"], job["digest"])
    done = wait(world.researcher, job["id"], FINAL)
    assert done["state"] == "output_review", done
    return done


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    errors: list[str] = []
    tab = context.new_page()
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    # A CSP violation (an inline script or a third-party asset) shows up as a console error.
    assert not [e for e in errors if "Content Security Policy" in e], errors


def shoot(page: Any, name: str) -> None:
    """A 1280 x 800 screenshot, reduced to a 64-colour palette to keep the docs small."""
    if SHOTS:
        from PIL import Image

        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        image = Image.open(io.BytesIO(page.screenshot()))
        image.convert("RGB").quantize(colors=64).save(Path(SHOTS) / f"{name}.png",
                                                      optimize=True)


def sign_in(page: Any, url: str, token: str, shot: str | None = None) -> None:
    page.goto(url + "/")
    assert page.url.endswith("/signin")
    if shot:
        shoot(page, shot)
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert not page.url.endswith("/signin"), page.content()


def test_provider_approves_a_job_after_reading_its_code(served: Any, world: Any,
                                                        page: Any) -> None:
    job = world.researcher.submit(
        {"count.ipynb": notebook("import veil\nv = veil.load('hospital/visits')",
                                 "# how many visits per region\nprint(len(v))")},
        entrypoint="count.ipynb", inputs=["hospital/visits"])
    sign_in(page, served.url, world.hospital.token, shot="signin")
    assert "Waiting for your approval" in page.inner_text("main")
    shoot(page, "provider-home")
    page.click(f"a[href='/provider/jobs/{job['id']}']")
    code = page.inner_text("details.file")
    assert "how many visits per region" in code and "veil.load" in code
    assert job["digest"] in page.inner_text("main")
    shoot(page, "provider-approval")
    page.click("#approve")
    page.wait_for_load_state()
    approvals = world.hospital.job(job["id"])["approvals"]
    assert [(a["party"], a["decision"]) for a in approvals] == [("hospital", "approve")]
    assert "approve" in page.inner_text("main")


def test_provider_reviews_and_rejects_a_row_level_output(served: Any, world: Any, ran: Any,
                                                         page: Any) -> None:
    sign_in(page, served.url, world.hospital.token)
    page.goto(f"{served.url}/provider/jobs/{ran['id']}#output-people")
    people = page.locator("#output-people")
    text = people.inner_text()
    assert "60 rows \u00d7 2 columns" in text
    assert "privacy-unit id" in text  # the hint names the row-level key
    shoot(page, "provider-output-review")
    people.locator("input[name=reason]").fill("one row per patient")
    people.locator("button[value=reject]").click()
    page.wait_for_load_state()
    outputs = {o["name"]: o for o in world.hospital.job(ran["id"])["outputs"]}
    assert outputs["people"]["status"] == "rejected"
    assert outputs["people"]["reason"] == "one row per patient"
    assert outputs["by_region"]["status"] == "released"


def test_consumer_downloads_released_results_and_sees_the_verdict(
        served: Any, world: Any, ran: Any, page: Any) -> None:
    sign_in(page, served.url, world.researcher.token)
    assert "hospital/visits" in page.inner_text("main")
    shoot(page, "consumer-home")
    page.click(f"a[href='/consumer/jobs/{ran['id']}']")
    verdict = page.inner_text("#verdict")
    assert "signature and time" in verdict and "bundle" in verdict
    assert "Every check passed" in verdict, verdict
    shoot(page, "consumer-job")
    with page.expect_download() as download:
        page.click(f"a[href='/consumer/jobs/{ran['id']}/outputs/by_region']")
    data = Path(download.value.path()).read_bytes()
    assert data == world.researcher.output(ran["id"], "by_region")
    table = pd.read_parquet(io.BytesIO(data))
    assert sorted(table["region"]) == ["east", "north", "south"]
    # Nothing that waits for review is offered.
    assert page.locator(f"a[href='/consumer/jobs/{ran['id']}/outputs/people']").count() == 0


def test_admin_revokes_a_token(served: Any, world: Any, page: Any) -> None:
    assert world.outsider.me()["user"] == "dave"
    sign_in(page, served.url, served.admin_token)
    shoot(page, "admin")
    page.click("button[data-user='dave']")
    page.wait_for_load_state()
    assert "revoked" in page.locator("#tokens").inner_text()
    with pytest.raises(ApiError) as refused:
        world.outsider.me()
    assert refused.value.status == 401


def test_audit_page_shows_the_chain(served: Any, world: Any, page: Any) -> None:
    sign_in(page, served.url, world.hospital.token)
    page.goto(f"{served.url}/audit?q=job.")
    text = page.inner_text("main")
    assert "Hash chain intact" in text and "job.approve" in text
    assert "token.issued" not in text  # other users' token events are not the provider's
    shoot(page, "audit")
    page.goto(f"{served.url}/docs")
    page.wait_for_selector(".swagger-ui .info", timeout=20_000)
    shoot(page, "api-docs")
