"""The researcher's whole round trip in JupyterLab, driven in Debian's headless chromium.

A real `veil serve`-equivalent server (workers, sandbox) and a real `veil lab` on loopback:
open the demo notebook, see the Veil sidebar list the datasets, check and submit the
notebook from the sidebar, approve via the API, watch the job reach `released` in the
sidebar, download all and see the verdict PASS. Set VEIL_LAB_SCREENSHOTS=docs/lab to save a
screenshot of each step on the way (a plain run leaves the work tree untouched).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from importlib import resources
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM, needs_chromium, start_server
from veil.demo.data import HOSPITAL_POLICY, INSURER_POLICY, hospital_visits, insurer_claims

SHOTS = os.environ.get("VEIL_LAB_SCREENSHOTS")

pytestmark = [pytest.mark.browser, needs_chromium]


def _shot(page: object, name: str) -> None:
    """A screenshot for docs/lab/, quantised to a small palette PNG (only when asked for)."""
    if not SHOTS:
        return
    from PIL import Image

    path = Path(SHOTS) / name
    page.screenshot(path=str(path))  # type: ignore[attr-defined]
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def _published(manifest: Path) -> list[object]:
    try:
        return list(json.loads(manifest.read_text())["outputs"])
    except (OSError, ValueError, KeyError):
        return []


def test_stage1_to_verified_result_without_leaving_jupyterlab(tmp_path: Path, lab_factory) -> None:
    from playwright.sync_api import expect, sync_playwright

    from veil.tee.sandbox import SandboxLimits

    limits = SandboxLimits(cpu_seconds=300, memory_bytes=4 * 1024**3, wall_seconds=300,
                           max_file_bytes=64 * 1024**2, output_bytes=128 * 1024**2)
    servers = start_server(tmp_path / "home", limits=limits)
    server = next(servers)
    try:
        admin = server.client(server.admin_token)
        for party in ("hospital", "insurer", "university"):
            admin.create_party(party)
        hospital = admin.with_token(admin.create_user("alice", "provider", "hospital")["token"])
        insurer = admin.with_token(admin.create_user("bob", "provider", "insurer")["token"])
        researcher = admin.with_token(admin.create_user("carol", "consumer", "university")["token"])
        for client, name, frame, policy in (
                (hospital, "visits", hospital_visits(3000), HOSPITAL_POLICY),
                (insurer, "claims", insurer_claims(3000), INSURER_POLICY)):
            path = tmp_path / f"{name}.csv"
            frame.to_csv(path, index=False)
            client.upload(name, path, policy=policy, policy_format="toml")
        root = tmp_path / "work"
        root.mkdir()
        demo = json.loads(resources.files("veil.demo").joinpath("analysis.ipynb").read_text())
        # As a notebook created in `veil lab` is: on the Veil kernel (%veil, stage-1 outputs).
        demo["metadata"]["kernelspec"] = {"name": "veil", "display_name": "Veil",
                                          "language": "python"}
        (root / "analysis.ipynb").write_text(json.dumps(demo))
        lab = lab_factory(server.url, researcher.token, root)
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{lab.url}/lab/tree/analysis.ipynb?token={lab.token}")
            page.locator('.lm-TabBar-tab[data-id="veil-sidebar"]').click(timeout=90_000)
            sidebar = page.locator("#veil-sidebar")
            expect(sidebar.locator('[data-veil-dataset="hospital/visits"]')).to_be_visible(
                timeout=30_000)
            expect(sidebar.locator('[data-veil-dataset="insurer/claims"]')).to_contain_text(
                "ε left")
            expect(sidebar.locator('[data-veil="submit"] code')).to_have_text("analysis.ipynb",
                                                                             timeout=30_000)
            # The notebook is open on the Veil kernel, idle.
            expect(page.locator(".jp-StatusBar-Widget", has_text="Veil")).to_contain_text(
                "Idle", timeout=90_000)
            _shot(page, "1-datasets.png")

            # Stage 1: run the notebook on the views in the Veil kernel.
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            manifest = root / "veil-results" / "stage1" / "analysis" / "manifest.json"
            deadline = time.monotonic() + 150
            while len(_published(manifest)) < 7:
                if time.monotonic() > deadline:
                    page.screenshot(path=str(tmp_path / "stage1-failed.png"))
                    raise AssertionError(f"the stage-1 run did not publish: {tmp_path}")
                time.sleep(0.5)
            _shot(page, "1b-stage1.png")

            sidebar.locator('[data-veil="check"]').click()
            digest = sidebar.locator('[data-veil="digest"]')
            expect(digest).to_have_text(re.compile(r"^sha256:[0-9a-f]{64}$"), timeout=60_000)
            expect(sidebar.locator('[data-veil="check-result"]')).to_contain_text(
                "inputs: hospital/visits, insurer/claims")
            expect(sidebar.locator('[data-veil="check-result"]')).to_contain_text(
                "queries pinned")
            expect(sidebar.locator('[data-veil="preflight"]')).to_contain_text(
                "nothing charged or released")
            expect(sidebar.locator('[data-veil="verdict-preview"]').first).to_be_visible()
            shown = digest.inner_text()
            _shot(page, "2-check.png")

            sidebar.locator('[data-veil="send"]').click()
            submitted = sidebar.locator('[data-veil="submitted"]')
            expect(submitted).to_contain_text("submitted job", timeout=60_000)
            job_id = submitted.inner_text().split()[-1]
            job = researcher.job(job_id)
            assert job["digest"] == shown  # what the sidebar showed is what is approved
            card = sidebar.locator(f'[data-veil-job="{job_id}"]')
            expect(card).to_contain_text("awaiting approval: hospital, insurer", timeout=10_000)

            for provider in (hospital, insurer):  # the stewards approve what they read
                provider.approve(job_id, job["digest"])
            job = researcher.wait(job_id, {"output_review", "released", "failed"},
                                  timeout_s=400)
            assert job["state"] == "output_review", job.get("reason")
            status = {o["name"]: o["status"] for o in job["outputs"]}
            # Pinned from the stage-1 run: the executor's results left without review.
            assert status["dp_mean_claim"] == status["claims_by_region"] == "released", status
            assert status["matched_visits"] == "pending_review"
            expect(card.locator(".veil-state")).to_have_text("output_review", timeout=10_000)
            for output in job["outputs"]:
                if output["status"] == "pending_review":
                    for provider in (hospital, insurer):
                        provider.review_output(job_id, output["name"], "approve")
            expect(card.locator(".veil-state")).to_have_text("released", timeout=15_000)
            _shot(page, "3-released.png")

            card.locator('[data-veil="download"]').click()
            expect(card.locator('[data-veil="downloaded"]')).to_contain_text(
                f"veil-results/{job_id}", timeout=60_000)
            card.locator('[data-veil="verify"]').click()
            verdict = card.locator('[data-veil="verdict-line"]')
            expect(verdict).to_have_text(re.compile("^PASS"), timeout=60_000)
            card.locator('[data-veil="verdict-line"]').scroll_into_view_if_needed()
            _shot(page, "4-verdict.png")
            browser.close()

        folder = root / "veil-results" / job_id
        assert (folder / "results" / "token.jwt").is_file()
        assert (folder / "results" / "manifest.json").is_file()
        assert (folder / "verdict.json").is_file()
    finally:
        shutil.rmtree(tmp_path / "work" / ".ipynb_checkpoints", ignore_errors=True)
        next(servers, None)
