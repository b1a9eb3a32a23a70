"""Each role's main flow in a real browser (Debian's chromium, headless, via Playwright)
against a real `veil serve` app on loopback, with jobs run in the real sandbox.

Set VEIL_CONSOLE_SCREENSHOTS=docs/console to save a screenshot of each page on the way.
"""

from __future__ import annotations

import io
import os
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
from tests.conftest import CHROMIUM, needs_chromium, start_server
from tests.console.helpers import signin
from veil.sdk.client import ApiError

pytestmark = [pytest.mark.slow, pytest.mark.browser, needs_chromium]
SHOTS = os.environ.get("VEIL_CONSOLE_SCREENSHOTS")

XSS = "<script>alert(1)</script>"
ANALYSIS = notebook(
    "import veil\nv = veil.load('hospital/visits')",
    "by_region = veil.aggregate(v, by='region', n=('patient_id', 'count_distinct'))\n"
    "veil.publish('by_region', by_region)",
    "# row-level: one row per patient, which a reviewer must stop\n"
    "veil.publish('people', v[['patient_id', 'cost']].head(60))",
    # Hostile outputs: markup in a table's column and values, in a dict, and a "figure"
    # whose bytes are an HTML page, written past veil.publish into the manifest.
    "import hashlib, json, os, pathlib\n"
    "import pandas as pd\n"
    "from veil.release.manifest import OutputEntry, OutputManifest, read_manifest, "
    "write_manifest\n"
    f"xss = {XSS!r}\n"
    "veil.publish('xss_table', pd.DataFrame({xss: [xss, 'ok']}))\n"
    "veil.publish('xss_dict', {xss: xss})\n"
    "out = pathlib.Path(os.environ.get('VEIL_OUTPUTS', '/outputs'))\n"
    "data = ('<html><body>' + xss + '</body></html>').encode()\n"
    "(out / 'fake.png').write_bytes(data)\n"
    "m = read_manifest(out)\n"
    "entry = OutputEntry(name='fake_png', kind='figure', file='fake.png', size=len(data),\n"
    "                    sha256=hashlib.sha256(data).hexdigest(), meta={'risk': None})\n"
    "write_manifest(out, OutputManifest(outputs=[*m.outputs, entry]))",
)
OUTPUTS = ["by_region", "people", "xss_table", "xss_dict", "fake_png"]
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
                                  inputs=["hospital/visits"], outputs=OUTPUTS,
                                  plans={"by_region": BY_REGION})
    world.hospital.approve(job["id"], job["digest"])
    done = wait(world.researcher, job["id"], FINAL)
    assert done["state"] == "output_review", done
    return done


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM))
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


def test_provider_creates_and_uploads_a_dataset_with_progress(served: Any, world: Any,
                                                              page: Any, tmp_path: Path) -> None:
    from tests.cleanroom.helpers import policy

    sign_in(page, served.url, world.hospital.token)
    page.fill("#new-dataset input[name=name]", "admissions")
    page.fill("#new-dataset textarea[name=policy]", policy())
    page.click("#create-dataset")
    page.wait_for_selector("#upload-form")
    csv = tmp_path / "admissions.csv"
    csv.write_text(visits_csv(500))
    page.set_input_files("#upload-form input[type=file]", str(csv))
    shoot(page, "provider-upload")
    page.click("#upload-button")
    # Reloaded once the data is in: a ready dataset has no upload form.
    page.wait_for_selector("#upload-form", state="detached", timeout=60_000)
    assert world.hospital.dataset("hospital/admissions")["rows"] == 500
    # The views build in the background: the page says so and refreshes itself until ready.
    page.goto(page.url.split("#")[0])
    page.wait_for_selector("#view-build", state="detached", timeout=60_000)
    main = page.inner_text("main")
    assert "patient_id" in main and "mock" in main and "ready" in main
    shoot(page, "provider-dataset")


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


def test_hostile_outputs_render_inert(served: Any, world: Any, ran: Any, page: Any) -> None:
    """Markup a notebook put in outputs is shown as text, and a fake figure is never HTML."""
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, served.url, world.hospital.token)
    page.goto(f"{served.url}/provider/jobs/{ran['id']}")
    assert XSS in page.inner_text("#output-xss_table")  # visible as text ...
    assert XSS in page.inner_text("#output-xss_dict")
    assert page.locator("#output-xss_table script, #output-xss_dict script").count() == 0
    # Opened on its own the fake figure is an (undecodable) image in Chromium's image viewer,
    # whose inline styles the CSP blocks: a separate tab, so those do not count against us.
    viewer = page.context.new_page()
    viewer.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    viewer.goto(f"{served.url}/provider/jobs/{ran['id']}/outputs/fake_png/figure")
    assert viewer.locator("script").count() == 0
    assert dialogs == []  # ... and never run
    provider = signin(served.url, world.hospital.token)
    html = provider.get(f"/provider/jobs/{ran['id']}").text
    assert XSS not in html
    fake = provider.get(f"/provider/jobs/{ran['id']}/outputs/fake_png/figure")
    assert fake.headers["content-type"] == "image/png"
    assert fake.headers["x-content-type-options"] == "nosniff"


def test_previews_and_downloads_follow_the_release_rules(served: Any, world: Any,
                                                         ran: Any) -> None:
    """Pending outputs reach their reviewers only; consumers get released outputs only."""
    consumer = signin(served.url, world.researcher.token)
    assert consumer.get(f"/consumer/jobs/{ran['id']}/outputs/xss_dict").status_code == 403
    assert consumer.get(f"/provider/jobs/{ran['id']}/outputs/fake_png/figure") \
        .status_code == 403
    outsider = signin(served.url, world.insurer.token)  # a provider, not of this job's data
    assert outsider.get(f"/provider/jobs/{ran['id']}").status_code == 404
    assert outsider.get(f"/provider/jobs/{ran['id']}/outputs/fake_png/figure") \
        .status_code == 404
    other = signin(served.url, world.outsider.token)  # another consumer
    assert other.get(f"/consumer/jobs/{ran['id']}/outputs/by_region").status_code == 404
    provider = signin(served.url, world.hospital.token)
    # A released output is not the provider's to download through the review route.
    assert provider.get(f"/provider/jobs/{ran['id']}/outputs/by_region/figure") \
        .status_code == 403


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
    # Nothing that waits for review (or was rejected) is offered.
    for name in ("people", "xss_table", "fake_png"):
        assert page.locator(f"a[href='/consumer/jobs/{ran['id']}/outputs/{name}']").count() == 0


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
