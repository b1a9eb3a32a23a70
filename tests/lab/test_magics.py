"""`%load_ext veil` and `%veil` in a real IPython shell against a real server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cleanroom.helpers import claims_csv, make_world, notebook, upload_csv, visits_csv

ANALYSIS = notebook(
    "import veil\nv = veil.load('insurer/claims')\nc = veil.load('hospital/visits')",
    "veil.publish('rows', int(len(v.merge(c, on='patient_id'))))",
)


@pytest.fixture()
def shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    yield shell
    InteractiveShell.clear_instance()


def test_submit_wait_download_verify_from_magics(live_server, tmp_path: Path, shell,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    w = make_world(live_server)
    upload_csv(w.hospital, tmp_path, "visits", visits_csv())
    upload_csv(w.insurer, tmp_path, "claims", claims_csv())
    monkeypatch.setenv("VEIL_URL", live_server.url)
    monkeypatch.setenv("VEIL_TOKEN", w.researcher.token or "")
    (tmp_path / "analysis.ipynb").write_bytes(ANALYSIS)

    shell.run_line_magic("load_ext", "veil")
    shell.user_ns["__session__"] = str(tmp_path / "analysis.ipynb")  # as Jupyter sets it
    job = shell.run_line_magic("veil", "submit --output rows")
    out = capsys.readouterr().out
    # Inputs found in the notebook, sorted: the digest does not depend on load order.
    assert job["inputs"] == ["hospital/visits", "insurer/claims"]
    assert job["digest"] in out and w.researcher.token not in out
    assert (tmp_path / "veil-results" / job["id"] / "bundle" / "analysis.ipynb").is_file()

    jobs = shell.run_line_magic("veil", "jobs")
    assert jobs[0]["awaiting_approval"] == ["hospital", "insurer"]
    assert "awaiting approval: hospital, insurer" in capsys.readouterr().out

    w.hospital.approve(job["id"], job["digest"])
    w.insurer.approve(job["id"], job["digest"])
    done = shell.run_line_magic("veil", f"wait {job['id']} --timeout 180")
    assert done["state"] == "output_review" and done["awaiting_review"] == ["rows"]
    w.hospital.review_output(job["id"], "rows", "approve")
    w.insurer.review_output(job["id"], "rows", "approve")

    paths = shell.run_line_magic("veil", f"download {job['id']}")
    folder = tmp_path / "veil-results" / job["id"]
    assert {p.name for p in paths} == {"rows.json", "manifest.json", "token.jwt",
                                       "attestation.json"}
    assert json.loads((folder / "results" / "rows.json").read_text())
    report = shell.run_line_magic("veil", f"verify {job['id']}")
    assert report["ok"], report["checks"]
    assert {c["name"] for c in report["checks"]} >= {"signature and time", "bundle",
                                                     "output manifest", "output rows"}
    assert "VERIFIED" in capsys.readouterr().out

    # A downloaded output altered afterwards no longer verifies (claim by claim).
    (folder / "results" / "rows.json").write_text("12345")
    report = shell.run_line_magic("veil", f"verify {job['id']}")
    assert not report["ok"]
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["output rows"]


def test_bad_magic_input_is_a_message_not_a_traceback(live_server, tmp_path: Path, shell,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    w = make_world(live_server)
    monkeypatch.setenv("VEIL_URL", live_server.url)
    monkeypatch.setenv("VEIL_TOKEN", w.researcher.token or "")
    shell.run_line_magic("load_ext", "veil")
    assert shell.run_line_magic("veil", "submit") is None  # no notebook known
    assert "cannot tell which notebook" in capsys.readouterr().out
    (tmp_path / "none.ipynb").write_bytes(notebook("x = 1"))
    assert shell.run_line_magic("veil", "submit none.ipynb") is None
    assert "no inputs" in capsys.readouterr().out
    assert shell.run_line_magic("veil", "wait nosuchjob --timeout 1") is None
    assert "404" in capsys.readouterr().out
    assert shell.run_line_magic("veil", "download ../../etc") is None
    assert "not a job id" in capsys.readouterr().out
