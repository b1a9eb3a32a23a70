"""The researcher's workspace: what the sidebar and the ``%veil`` magics share.

Pure functions over a `Client` and local files, so the Jupyter server extension, the IPython
magics and the tests drive the same code. Nothing here trusts the workload: the verdict is
recomputed from the consumer's own copy of the bundle and the downloaded files, against the
verifier's JWKS only (`veil.sdk.verify`).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.errors import VeilError
from veil.sdk.client import Client

__all__ = ["LabError", "Prepared", "dataset_rows", "detect_inputs", "job_summary",
           "prepare", "submit", "verdict"]

#: Where a job's submitted files, downloaded outputs, manifest and token go, per job.
RESULTS_DIR = "veil-results"
RESULTS_SUBDIR = "results"  # a job's downloaded outputs, manifest and token
_LOAD_RE = re.compile(r"""veil\.load\(\s*(['"])([^'"]+)\1""")


class LabError(VeilError, ValueError):
    """A workspace request that cannot be carried out (bad path, no inputs, bad notebook)."""

    status_hint = 422


@dataclass(frozen=True)
class Prepared:
    """A bundle ready to send: the exact bytes, and the digest computed before sending."""

    files: Mapping[str, bytes]
    entrypoint: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]  # declared: the server enforces them
    digest: str
    runtime: str
    pinned: bool  # a veil.plans.json beside the notebook is part of the bundle

    def describe(self) -> dict[str, Any]:
        return {"entrypoint": self.entrypoint, "inputs": list(self.inputs),
                "outputs": list(self.outputs),
                "files": sorted(self.files), "digest": self.digest, "runtime": self.runtime,
                "pinned": self.pinned}


def detect_inputs(source: bytes | str, *, entrypoint: str = "notebook.ipynb") -> list[str]:
    """Dataset names passed as string literals to ``veil.load`` in a notebook or script.

    Parsed with `ast` where the code parses (so comments and strings do not count), with a
    regular expression as the fallback for cells that use IPython syntax (``%magic``, ``!cmd``).
    Order of first use, no duplicates.
    """
    text = source.decode() if isinstance(source, bytes) else source
    if entrypoint.endswith(".ipynb"):
        try:
            doc = json.loads(text)
            cells = [c for c in doc.get("cells", []) if c.get("cell_type") == "code"]
            chunks = ["".join(c["source"]) if isinstance(c.get("source"), list)
                      else str(c.get("source", "")) for c in cells]
        except (ValueError, AttributeError, TypeError):
            raise LabError("the notebook is not valid nbformat JSON") from None
    else:
        chunks = [text]
    found: list[str] = []
    for chunk in chunks:
        for name in _loads_in(chunk):
            if name not in found:
                found.append(name)
    return found


def _loads_in(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return [m.group(2) for m in _LOAD_RE.finditer(code)]
    names = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "veil" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.append((node.lineno, node.col_offset, node.args[0].value))
    return [name for _, _, name in sorted(names)]


def stage1_folder(notebook: Path) -> Path:
    """Where a notebook's stage-1 run in the Veil kernel publishes ($VEIL_OUTPUTS): its plans
    are pinned from here when it is submitted."""
    return notebook.parent / RESULTS_DIR / "stage1" / notebook.stem


def pinned_plans(notebook: Path) -> tuple[bytes | None, list[str]]:
    """The ``veil.plans.json`` to submit with `notebook`, and the outputs to declare.

    The plans are the file beside the notebook, else those of its last stage-1 run in the
    Veil kernel, else None (its queries then go to review). The declared outputs are what
    that run published plus every pinned name (the server refuses a pin it was not told of).
    A stage-1 folder or plans file that cannot be read is an error, not a silent "no plans".
    """
    from veil.privacy.plans import PINNED_PLANS_FILE, PlanError, parse_pinned, pin_plans
    from veil.release.manifest import MANIFEST_NAME, ManifestError, read_manifest
    from veil.sdk.outputs import collect_plans

    folder = stage1_folder(notebook)
    beside = notebook.with_name(PINNED_PLANS_FILE)
    try:
        published: list[str] = []
        pinned: bytes | None = None
        if (folder / MANIFEST_NAME).is_file():
            published = [entry.name for entry in read_manifest(folder).outputs]
            plans = collect_plans(folder)
            pinned = pin_plans(plans) if plans else None
        if beside.is_file():
            pinned = beside.read_bytes()
        names = set(published) | (set(parse_pinned(pinned)) if pinned else set())
    except (PlanError, ManifestError, OSError, ValueError) as exc:
        raise LabError(f"the pinned plans or stage-1 outputs of {notebook.name} cannot be read "
                       f"({type(exc).__name__}: {exc}); run the notebook again") from None
    return pinned, sorted(names)


def resolve(root: Path, relative: str) -> Path:
    """A path the browser named, inside the workspace root; anything else is refused."""
    if not relative or "\x00" in relative:
        raise LabError("no file named")
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise LabError("the path is outside the workspace")
    if not path.is_file():
        raise LabError(f"no such file: {relative}")
    return path


def prepare(client: Client, path: Path, inputs: Sequence[str] = (),
            outputs: Sequence[str] = ()) -> Prepared:
    """Read the notebook (and a ``veil.plans.json`` beside it) and measure the bundle.

    The runtime comes from the server (`/runtime`), so the digest shown here is the one the
    providers will be asked to approve; `submit` refuses if the server's differs. The
    declared outputs are ``outputs`` plus what the last stage-1 run published: the gate
    refuses any output that was not declared.
    """
    from veil.jobs.bundle import BundleError, make_bundle
    from veil.names import InvalidName
    from veil.privacy.plans import PINNED_PLANS_FILE

    if not path.name.endswith((".ipynb", ".py")):
        raise LabError("only a notebook (.ipynb) or a script (.py) can be submitted")
    files = {path.name: path.read_bytes()}
    plans, published = pinned_plans(path)
    declared = sorted(set(published) | set(outputs))
    if plans is not None:
        files[PINNED_PLANS_FILE] = plans
    found = list(inputs) or detect_inputs(files[path.name], entrypoint=path.name)
    if not found:
        raise LabError("no inputs: the notebook calls veil.load with no literal dataset name; "
                       "name the inputs explicitly")
    runtime = str(client.runtime()["runtime"])
    try:
        bundle = make_bundle(files, entrypoint=path.name, inputs=sorted(found), outputs=declared,
                             runtime=runtime)
    except (BundleError, InvalidName) as exc:
        raise LabError(str(exc)) from None
    return Prepared(files, path.name, bundle.inputs, bundle.outputs, bundle.digest, runtime,
                    PINNED_PLANS_FILE in files)


def submit(client: Client, prepared: Prepared, results_root: Path) -> dict[str, Any]:
    """Send the bundle, keep the exact bytes sent (the consumer's own copy for verifying).

    Inputs are sent in sorted order, so the digest does not depend on the order the notebook
    loads them in.
    """
    job = client.submit(dict(prepared.files), entrypoint=prepared.entrypoint,
                        inputs=prepared.inputs, outputs=prepared.outputs)
    if job["digest"] != prepared.digest:
        # Fail loudly: the providers are asked to approve something other than what we showed.
        client.cancel(job["id"])
        raise LabError(f"the server measured {job['digest']}, not the digest shown "
                       f"({prepared.digest}); the job was cancelled")
    folder = job_folder(results_root, job["id"]) / "bundle"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in prepared.files.items():
        (folder / name).write_bytes(data)
    return job


def job_folder(results_root: Path, job_id: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", job_id):
        raise LabError("not a job id")
    return results_root / RESULTS_DIR / job_id


def download(client: Client, job_id: str, folder: Path) -> list[Path]:
    """Released outputs, ``manifest.json``, ``token.jwt`` and ``attestation.json`` into
    ``folder/results`` (``Client.download_all``: names from the manifest never escape it)."""
    return client.download_all(job_id, folder / RESULTS_SUBDIR)


def preflight(client: Client, prepared: Prepared) -> dict[str, Any]:
    """The gate's verdict per output on the stage-1 views, before anything is submitted."""
    return client.preflight(dict(prepared.files), entrypoint=prepared.entrypoint,
                            inputs=prepared.inputs, outputs=prepared.outputs)


@dataclass
class DatasetRow:
    name: str
    views: list[str]
    view_rows: dict[str, int | None]
    columns: list[dict[str, Any]]
    join_keys: list[str]
    epsilon_left: float | None = None
    epsilon_total: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "views": self.views, "view_rows": self.view_rows,
                "columns": self.columns, "join_keys": self.join_keys,
                "epsilon_left": self.epsilon_left, "epsilon_total": self.epsilon_total,
                **self.extra}


def dataset_rows(datasets: Sequence[Mapping[str, Any]],
                 budgets: Sequence[Mapping[str, Any]]) -> list[DatasetRow]:
    """Datasets the caller may use, with their views, public schema and budget left."""
    left = {b["dataset"]: b for b in budgets}
    rows = []
    for d in datasets:
        if d.get("status") != "ready":
            continue
        schema = d.get("schema") or {}
        columns = [{"name": c.get("name"), "type": c.get("type") or c.get("dtype"),
                    "nullable": c.get("nullable")} for c in schema.get("columns", [])]
        budget = left.get(d["name"], {})
        rows.append(DatasetRow(
            name=d["name"], views=list(d.get("views", [])),
            view_rows={k: v.get("rows") for k, v in (d.get("view_info") or {}).items()},
            columns=columns, join_keys=list(d.get("join_keys", [])),
            epsilon_left=budget.get("epsilon_left"), epsilon_total=budget.get("epsilon_total")))
    return rows


def job_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    """What the jobs panel shows: state, who still has to approve, outputs, timings."""
    approved = {a["party"] for a in job.get("approvals", [])
                if a.get("decision") == "approve" and a.get("digest") == job.get("digest")}
    owners = sorted({ref.split("/", 1)[0] for ref in job.get("inputs", [])})
    waiting = [p for p in owners if p not in approved] \
        if job.get("state") in ("submitted", "pending_approval") else []
    reviewing = sorted({o["name"] for o in job.get("outputs", [])
                        if o.get("status") == "pending_review"})
    return {"id": job["id"], "state": job["state"], "digest": job.get("digest"),
            "entrypoint": job.get("entrypoint"), "inputs": job.get("inputs", []),
            "reason": job.get("reason"), "awaiting_approval": waiting,
            "awaiting_review": reviewing,
            "outputs": [{"name": o["name"], "kind": o["kind"], "status": o["status"],
                         "reason": o.get("reason"), "size": o.get("size")}
                        for o in job.get("outputs", [])],
            "transitions": [{"to": t["to"], "at": t["at"]} for t in job.get("transitions", [])]}


def verdict(client: Client, job_id: str, results_root: Path) -> dict[str, Any]:
    """Verify the job's final token against the JWKS, claim by claim, with our own files.

    The bundle is our copy of what we sent (kept by `submit`); the outputs are the files
    `download_all` wrote. Never raises for a bad token: each check says what it found.
    """
    from veil.sdk.verify import verify_token

    folder = job_folder(results_root, job_id)
    results = folder / RESULTS_SUBDIR
    token_file = results / "token.jwt"
    if not token_file.is_file():
        raise LabError("download the job's results first (no token in its folder)")
    jwks = client.jwks()
    bundle_dir = folder / "bundle"
    entry = client.job(job_id).get("entrypoint")
    bundle = sorted(bundle_dir.iterdir(), key=lambda p: (p.name != entry, p.name)) \
        if bundle_dir.is_dir() else []
    result = verify_token(token_file.read_text().strip(), jwks, bundle_files=bundle,
                          outputs_dir=results)
    if not bundle:
        result.add("bundle", False, "no local copy of the submitted files to recompute from")
    claims = result.claims
    xv = claims.get("x-veil", {})
    report = {"job": job_id, "ok": result.ok,
              "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in result.checks],
              "claims": {"iss": claims.get("iss"), "hwmodel": claims.get("hwmodel"),
                         "dbgstat": claims.get("dbgstat"), "ear.status": claims.get("ear.status"),
                         "backend": xv.get("backend"), "phase": xv.get("phase"),
                         "hardware_backed": xv.get("hardware_backed"),
                         "bundle_digest": claims.get("submods", {}).get("bundle", {})
                         .get("digest")}}
    (folder / "verdict.json").write_text(json.dumps(report, indent=2, default=str))
    return report
