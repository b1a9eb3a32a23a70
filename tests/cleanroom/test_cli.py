"""The `veil` CLI against a live server: the commands a provider and a researcher type."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cleanroom.helpers import make_world, notebook, policy, upload_csv, visits_csv


def veil(*args: str, url: str | None = None, token: str | None = None,
         home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    for key, value in (("VEIL_URL", url), ("VEIL_TOKEN", token),
                       ("VEIL_HOME", str(home) if home else None)):
        if value is not None:
            env[key] = value
    return subprocess.run([sys.executable, "-m", "veil", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_admin_init_once(tmp_path: Path) -> None:
    first = veil("admin", "init", home=tmp_path / "h")
    assert first.returncode == 0 and first.stdout.strip().startswith("veil_")
    again = veil("admin", "init", home=tmp_path / "h")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_local_digest_matches_the_server(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv(20))
    nb = tmp_path / "analysis.ipynb"
    nb.write_bytes(notebook("import veil\nprint(veil.load('hospital/visits').shape)"))
    submitted = veil("job", "submit", str(nb), "-i", "hospital/visits", url=live_server.url,
                     token=w.researcher.token)
    assert submitted.returncode == 0, submitted.stderr
    local = veil("job", "digest", str(nb), "-i", "hospital/visits")
    assert local.returncode == 0
    digest = local.stdout.strip()
    assert f"digest {digest}" in submitted.stdout
    job_id = submitted.stdout.split()[1]
    approved = veil("job", "approve", job_id, "--digest", digest, url=live_server.url,
                    token=w.hospital.token)
    assert approved.returncode == 0 and "approved" in approved.stdout


def test_upload_and_view_from_the_cli(live_server, tmp_path: Path) -> None:
    w = make_world(live_server)
    data = tmp_path / "visits.csv"
    data.write_text(visits_csv(100))
    pol = tmp_path / "policy.toml"
    pol.write_text('join_keys = ["patient_id"]\n' + policy())
    up = veil("dataset", "upload", str(data), "--name", "visits", "--policy", str(pol),
              url=live_server.url, token=w.hospital.token)
    assert up.returncode == 0, up.stderr
    assert "hospital/visits: 100 rows" in up.stdout
    assert "hospital/visits: ready" in up.stdout  # waited for the background build
    assert "join key patient_id: " in up.stdout
    assert "(no earlier dataset to match); epsilon 0.1 charged to the budget" in up.stdout
    out = tmp_path / "view.parquet"
    got = veil("dataset", "view", "hospital/visits", "--kind", "mock", "-o", str(out),
               url=live_server.url, token=w.researcher.token)
    assert got.returncode == 0 and out.stat().st_size > 0
    denied = veil("dataset", "view", "hospital/visits", "-o", str(out), url=live_server.url,
                  token=w.outsider.token)
    assert denied.returncode == 1 and "404" in denied.stderr


def test_serve_refuses_without_bubblewrap(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import veil.tee.sandbox
    from veil.cli import app

    monkeypatch.setattr(veil.tee.sandbox, "find_bwrap", lambda: None)
    result = CliRunner().invoke(app, ["serve", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "apt-get install bubblewrap" in " ".join(result.output.split())


def test_job_pin_collects_the_plans_a_stage_one_run_published(tmp_path: Path) -> None:
    """What a researcher types between stage 1 and submission; the digest covers the pins."""
    from tests.cleanroom.helpers import dp_query
    from veil.privacy.plans import parse_pinned
    from veil.release.manifest import OutputEntry, OutputManifest, write_manifest

    out = tmp_path / "stage1"
    out.mkdir()
    plan = dp_query(["hospital/visits"], "count", epsilon=0.5)
    data = plan.to_bytes()
    (out / "n.plan.json").write_bytes(data)
    import hashlib

    write_manifest(out, OutputManifest(outputs=[OutputEntry(
        name="n", kind="plan", file="n.plan.json", size=len(data),
        sha256=hashlib.sha256(data).hexdigest())]))
    pins = tmp_path / "veil.plans.json"
    done = veil("job", "pin", str(out), "--to", str(pins))
    assert done.returncode == 0 and "pinned 1 plan(s)" in done.stdout, done.stderr
    assert parse_pinned(pins.read_bytes())["n"].digest == plan.digest
    nb = tmp_path / "a.ipynb"
    nb.write_bytes(notebook("import veil"))
    digests = {veil("job", "digest", str(nb), *extra, "-i", "hospital/visits").stdout
               for extra in ([], [str(pins)])}
    assert len(digests) == 2  # the pinned plans are part of what providers approve
    wrong = veil("job", "pin", str(out), "--to", str(tmp_path / "plans.json"))
    assert wrong.returncode == 1 and "veil.plans.json" in wrong.stderr
