"""The workspace core without a server: input detection, paths, job summaries, forgeries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.cleanroom.helpers import notebook
from veil.lab import workspace
from veil.lab.workspace import LabError, detect_inputs, job_summary, resolve
from veil.sdk.client import ApiError, Client


def test_inputs_are_the_literal_names_passed_to_veil_load_in_order_of_use() -> None:
    nb = notebook(
        "import veil\n# veil.load('commented/out')\nc = veil.load('insurer/claims')",
        "s = \"veil.load('in/a_string')\"\nv = veil.load(\"hospital/visits\")",
        "%matplotlib inline\nagain = veil.load('insurer/claims')",  # IPython syntax: fallback
        "name = 'x/y'\nveil.load(name)",  # not a literal: not guessed
    )
    assert detect_inputs(nb) == ["insurer/claims", "hospital/visits"]


def test_a_script_is_scanned_too_and_bad_notebook_json_is_a_clear_error() -> None:
    assert detect_inputs("import veil\nveil.load('a/b')\n", entrypoint="job.py") == ["a/b"]
    with pytest.raises(LabError, match="not valid nbformat JSON"):
        detect_inputs(b"{not json", entrypoint="x.ipynb")


def test_paths_outside_the_workspace_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.ipynb").write_text("{}")
    (root / "a.ipynb").write_text("{}")
    assert resolve(root, "a.ipynb") == (root / "a.ipynb").resolve()
    for bad in ("../secret.ipynb", "/etc/passwd", "", "missing.ipynb", "a\x00.ipynb"):
        with pytest.raises(LabError):
            resolve(root, bad)
    (root / "link.ipynb").symlink_to(tmp_path / "secret.ipynb")
    with pytest.raises(LabError, match="outside"):
        resolve(root, "link.ipynb")


def test_job_folders_take_job_ids_only(tmp_path: Path) -> None:
    assert workspace.job_folder(tmp_path, "abc_123-x").name == "abc_123-x"
    for bad in ("../x", "a/b", "", "x" * 65):
        with pytest.raises(LabError):
            workspace.job_folder(tmp_path, bad)


def test_summary_names_the_providers_that_still_have_to_approve_the_current_digest() -> None:
    job = {"id": "j1", "state": "pending_approval", "digest": "sha256:new",
           "inputs": ["hospital/visits", "insurer/claims"], "reason": None,
           "approvals": [{"party": "hospital", "decision": "approve", "digest": "sha256:new"},
                         {"party": "insurer", "decision": "approve", "digest": "sha256:old"}],
           "outputs": [], "transitions": []}
    assert job_summary(job)["awaiting_approval"] == ["insurer"]
    assert job_summary({**job, "state": "running"})["awaiting_approval"] == []


def test_datasets_panel_rows_carry_views_schema_and_budget_left() -> None:
    datasets = [{"name": "hospital/visits", "status": "ready", "views": ["mock"],
                 "view_info": {"mock": {"rows": 100}}, "join_keys": ["patient_id"],
                 "schema": {"columns": [{"name": "age", "type": "int64", "nullable": False}]}},
                {"name": "hospital/draft", "status": "draft", "views": []}]
    budgets = [{"dataset": "hospital/visits", "epsilon_left": 2.5, "epsilon_total": 3.0}]
    [row] = workspace.dataset_rows(datasets, budgets)
    assert row.to_json()["epsilon_left"] == 2.5
    assert row.columns == [{"name": "age", "type": "int64", "nullable": False}]
    assert row.view_rows == {"mock": 100}


class _ForgedManifestServer(Client):
    """A server (or a workload behind it) naming a path, not a file, in the manifest."""

    def __init__(self, file: str) -> None:
        super().__init__("http://127.0.0.1:9", "t")
        self.file = file

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        if path.endswith("/attestation"):
            return {"token": "x.y.z", "jwks_uri": "/.well-known/jwks.json", "manifest": {
                "outputs": [{"name": "out", "file": self.file, "sha256": "0" * 64}]}}
        return {"id": "j", "digest": "sha256:0", "backend": "local-sandbox", "insecure": False,
                "outputs": [{"name": "out", "status": "released", "sha256": _PAYLOAD_SHA}]}

    def output(self, job_id: str, name: str) -> bytes:
        return b"payload"


_PAYLOAD_SHA = hashlib.sha256(b"payload").hexdigest()


@pytest.mark.parametrize("file", ["../../escape.txt", "/tmp/abs.txt", "sub/dir.txt", ".."])
def test_download_refuses_manifest_file_names_that_are_not_plain(tmp_path: Path,
                                                                 file: str) -> None:
    folder = tmp_path / "job"
    with pytest.raises(ApiError, match="refusing to write"):
        workspace.download(_ForgedManifestServer(file), "j", folder)
    assert not (tmp_path / "escape.txt").exists()
    assert not (folder / "results" / "token.jwt").exists()  # nothing half-written to verify


def test_download_writes_outputs_manifest_and_token(tmp_path: Path) -> None:
    paths = workspace.download(_ForgedManifestServer("out.json"), "j", tmp_path)
    assert {p.name for p in paths} == {"out.json", "manifest.json", "token.jwt",
                                       "attestation.json"}
    assert json.loads((tmp_path / "results" / "manifest.json").read_text())["outputs"]


def test_pinned_plans_come_from_the_file_beside_else_the_last_stage1_run(tmp_path: Path) -> None:
    from tests.cleanroom.helpers import dp_query
    from veil.privacy.plans import pin_plans

    nb = tmp_path / "analysis.ipynb"
    nb.write_bytes(notebook("import veil"))
    assert workspace.pinned_plans(nb) == (None, [])  # never run, nothing pinned: all reviewed

    folder = workspace.stage1_folder(nb)
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(LabError, match="run the notebook again"):  # fail closed, not "no plans"
        workspace.pinned_plans(nb)

    plan = dp_query(["hospital/visits"], "count", epsilon=0.5)
    (folder / "manifest.json").unlink()
    beside = pin_plans({"n": plan})
    (tmp_path / "veil.plans.json").write_bytes(beside)
    assert workspace.pinned_plans(nb) == (beside, ["n"])  # pinned names are declared outputs
    (tmp_path / "veil.plans.json").write_text('{"n": {"query": 1}}')
    with pytest.raises(LabError):
        workspace.pinned_plans(nb)
