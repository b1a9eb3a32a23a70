"""The demo's steps, each timed; see `veil.demo`."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from veil.demo.data import HOSPITAL_POLICY, INSURER_POLICY, hospital_visits, insurer_claims
from veil.sdk.client import ApiError, Client

NOTEBOOK = "analysis.ipynb"
INPUTS = ("hospital/visits", "insurer/claims")
TRUSTED_OUTPUTS = ("claims_by_region", "dp_mean_claim", "dp_visit_cost_plus_premium",
                   "dp_insured_visits_by_age_band", "dp_approval_model")
OUTPUTS = (*TRUSTED_OUTPUTS, "matched_visits", "approval_model")


class DemoFailed(RuntimeError):
    pass


@dataclass
class Timings:
    phases: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.phases.append((name, time.perf_counter() - start))


def run_demo(home: Path | None = None, *, patients: int = 3000, insecure_dev: bool = False,
             console: Console | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run the story; returns a summary. Raises DemoFailed on the first broken step."""
    console = console or Console()
    timings = Timings()
    with tempfile.TemporaryDirectory(prefix="veil-demo-") as tmp:
        home = home or Path(tmp) / "home"
        work = Path(tmp) / "work"
        work.mkdir()
        with timings.phase("start server"):
            admin_token = _admin_token(home)
            port = _free_port()
            server = _start_server(home, port, insecure_dev, work / "server.log")
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, server, work / "server.log")
            try:
                summary = _story(url, admin_token, work, patients, timings, console, timeout_s)
            except ApiError as exc:
                tail = (work / "server.log").read_text(errors="replace")[-3000:]
                raise DemoFailed(f"the server refused a step: {exc}\n--- server log ---\n{tail}")\
                    from None
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    _print_timings(console, timings)
    summary["timings"] = dict(timings.phases)
    return summary


def _story(url: str, admin_token: str, work: Path, patients: int, timings: Timings,
           console: Console, timeout_s: float) -> dict[str, Any]:
    admin = Client(url, admin_token)
    with timings.phase("identities"):
        for party in ("hospital", "insurer", "university"):
            admin.create_party(party)
        hospital = admin.with_token(admin.create_user("alice", "provider", "hospital")["token"])
        insurer = admin.with_token(admin.create_user("bob", "provider", "insurer")["token"])
        researcher_token = admin.create_user("carol", "consumer", "university")["token"]
        researcher = admin.with_token(researcher_token)
    with timings.phase("upload + encrypt + views"):
        visits = hospital_visits(patients)
        claims = insurer_claims(patients)
        for client, name, frame, policy in ((hospital, "visits", visits, HOSPITAL_POLICY),
                                            (insurer, "claims", claims, INSURER_POLICY)):
            path = work / f"{name}.csv"
            frame.to_csv(path, index=False)
            # The upload answers once the data is stored; the views build in the background.
            info = client.upload(name, path, policy=policy, policy_format="toml")
            console.print(f"[bold]{info['name']}[/bold] uploaded: {info['rows']:,} rows, "
                          f"views: {', '.join(info['views'])} "
                          f"(built in {info['build'].get('seconds', 0):.1f} s)")
            report = info["view_info"].get("synthetic", {}).get("fidelity")
            if report:  # the provider's own view of how faithful its synthetic view is
                rel = report["relationships"]
                console.print(f"  {name} synthetic view (provider's report): mean |delta corr| "
                              f"{rel['mean_corr_delta']:.3f}, max KS {rel['max_ks']:.3f}"
                              + (f", TSTR {report['tstr']['metric']} ratio "
                                 f"{report['tstr']['ratio']:.2f}" if "tstr" in report else ""))
                for warning in report["warnings"]:
                    console.print(f"  [yellow]warning[/yellow] {warning}")

    notebook = resources.files("veil.demo").joinpath(NOTEBOOK).read_bytes()
    (work / NOTEBOOK).write_bytes(notebook)
    with timings.phase("stage 1: develop on views"):
        seen = {}
        for name in INPUTS:
            kind, data = researcher.view(name)
            seen[name] = (kind, len(pd.read_parquet(io.BytesIO(data))))
            dp = researcher.dataset(name)["view_info"][kind].get("dp")
            cost = f" (DP synthetic, epsilon {dp['epsilon']:.3g} {dp['method']})" if dp else ""
            console.print(f"stage 1: researcher sees [bold]{name}[/bold] as a "
                          f"[cyan]{kind}[/cyan] view with {seen[name][1]:,} rows{cost}")
        stage1, plans = _run_locally(work, url, researcher_token)
        console.print(f"stage 1: pinned the plans of {', '.join(sorted(plans))}")
    with timings.phase("submit + approvals"):
        job = researcher.submit({NOTEBOOK: notebook}, entrypoint=NOTEBOOK, inputs=INPUTS,
                                outputs=OUTPUTS, plans=plans)
        console.print(f"job {job['id']} submitted; bundle digest [bold]{job['digest']}[/bold]")
        from veil.jobs.bundle import make_bundle
        from veil.privacy.plans import PINNED_PLANS_FILE

        for provider in (hospital, insurer):
            # A steward reads the code and the pinned plans, then approves what they read.
            files = {name: provider.bundle_file(job["id"], name)
                     for name in (NOTEBOOK, PINNED_PLANS_FILE)}
            local = make_bundle(files, entrypoint=NOTEBOOK, inputs=INPUTS,
                                outputs=OUTPUTS, runtime=job["runtime"]).digest
            if local != job["digest"]:
                raise DemoFailed("the reviewed bundle does not match the job's digest")
            approved = provider.approve(job["id"], local)
        for approval in approved["approvals"]:
            console.print(f"approved by [bold]{approval['party']}[/bold] ({approval['actor']}) "
                          f"for {approval['digest'][:23]}…")
    with timings.phase("stage 2: secure run + gate"):
        try:
            job = researcher.wait(job["id"], {"output_review", "released", "failed", "rejected"},
                                  timeout_s=timeout_s)
        except TimeoutError as exc:
            raise DemoFailed(str(exc)) from None
        if job["state"] == "failed":
            raise DemoFailed(f"the secure run failed: {job['reason']}")
    gated = {o["name"]: o for o in job["outputs"]}
    for name in TRUSTED_OUTPUTS:  # computed by the release executor, released by the gate alone
        o = gated.get(name)
        if o is None or o["kind"] not in ("dp", "aggregate", "dp_model") \
                or o["status"] != "released":
            raise DemoFailed(f"{name} was not computed and released by the release executor: "
                             f"{o and (o['kind'], o['status'], o['reason'])}")
    attestation = (job.get("result") or {}).get("attestation") or {}
    if "overhead_s" in attestation:  # measured by the worker inside the run above
        timings.phases.append(("  of which attest + key release", attestation["overhead_s"]))
    executor = (job.get("result") or {}).get("executor") or {}
    if "seconds" in executor:
        timings.phases.append((f"  of which release executor ({executor['plans']} plans)",
                               executor["seconds"]))
    with timings.phase("output review"):
        for output in job["outputs"]:
            if output["status"] == "pending_review":
                for provider in (hospital, insurer):
                    job = provider.review_output(job["id"], output["name"], "approve")
        if job["state"] != "released":
            raise DemoFailed(f"job ended {job['state']}: {job['reason']}")
    with timings.phase("download"):
        released = {o["name"]: o for o in job["outputs"]}
        raw = {name: researcher.output(job["id"], name)
               for name, o in released.items() if o["status"] == "released"}
        stage2 = {name: _decode(released[name]["kind"], data) for name, data in raw.items()}
    with timings.phase("verify attestation token"):
        verified = _verify_token(url, researcher_token, job["id"], work, raw,
                                 [work / NOTEBOOK, work / PINNED_PLANS_FILE], console)
    _print_results(console, stage1, stage2, released)
    _print_budgets(console, researcher, stage2.get("dp_mean_claim"))
    if set(stage2) != set(OUTPUTS):
        raise DemoFailed("not every output was released")
    if stage2["matched_visits"] == stage1.get("matched_visits"):
        raise DemoFailed("stage 2 returned the stage-1 result: it did not use the full data")
    return {"job": job["id"], "digest": job["digest"], "stage1_views": seen,
            "stage1": {k: _plain(v) for k, v in stage1.items()},
            "stage2": {k: _plain(v) for k, v in stage2.items()}, "result": job["result"],
            "attestation": verified}


def _verify_token(url: str, token: str, job_id: str, work: Path, raw: dict[str, bytes],
                  bundle_files: list[Path], console: Console) -> dict[str, Any]:
    """What a consumer does with `veil attest verify`: only the JWKS is trusted."""
    from veil.sdk.verify import verify_token

    headers = {"Authorization": f"Bearer {token}"}
    doc = httpx.get(f"{url}/api/v1/jobs/{job_id}/attestation", headers=headers, timeout=30)
    jwks = httpx.get(f"{url}/.well-known/jwks.json", timeout=30)
    if doc.status_code != 200 or jwks.status_code != 200:
        raise DemoFailed("the job's attestation token or the verifier's JWKS is unavailable")
    body = doc.json()
    folder = work / "stage2-outputs"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(body["manifest"]))
    (work / "attestation.jwt").write_text(body["token"])
    (work / "jwks.json").write_text(jwks.text)
    for entry in body["manifest"]["outputs"]:
        if entry["name"] in raw:
            (folder / entry["file"]).write_bytes(raw[entry["name"]])
    verdict = verify_token(body["token"], jwks.json(), bundle_files=bundle_files,
                           outputs_dir=folder)
    claims = verdict.claims
    xv = claims.get("x-veil", {})
    outputs_ok = all(ok for name, ok, _ in verdict.checks if name.startswith("output"))
    summary = {"verified": verdict.ok, "issuer": claims.get("iss"),
               "hwmodel": claims.get("hwmodel"), "dbgstat": claims.get("dbgstat"),
               "ear.status": claims.get("ear.status"), "backend": xv.get("backend"),
               "bundle_digest": claims.get("submods", {}).get("bundle", {}).get("digest"),
               "output_hashes_ok": outputs_ok}
    table = Table("claim", "value", title="final attestation token (verified against the JWKS)")
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)
    if not verdict.ok:
        failed = "; ".join(f"{n}: {d}" for n, ok, d in verdict.checks if not ok)
        raise DemoFailed(f"the attestation token did not verify: {failed}")
    return summary


def _run_locally(work: Path, url: str, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Execute the notebook in the Programming Stage, as Jupyter would; (results, plans)."""
    import nbformat
    from nbclient import NotebookClient

    from veil.privacy.plans import PINNED_PLANS_FILE, pin_plans
    from veil.sdk.outputs import collect_plans

    outputs = work / "stage1-outputs"
    outputs.mkdir()
    env = {"VEIL_URL": url, "VEIL_TOKEN": token, "VEIL_OUTPUTS": str(outputs)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = nbformat.read(work / NOTEBOOK, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={
            "metadata": {"path": str(work)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    manifest = json.loads((outputs / "manifest.json").read_text())
    results = {}
    for o in manifest["outputs"]:
        if o["kind"] == "plan":  # a declared query: show its result on the views
            view = o["meta"]["view_file"]
            results[o["name"]] = _decode("aggregate" if view.endswith(".parquet") else "dp",
                                         (outputs / view).read_bytes())
        else:
            results[o["name"]] = _decode(o["kind"], (outputs / o["file"]).read_bytes())
    plans = collect_plans(outputs)
    (work / PINNED_PLANS_FILE).write_bytes(pin_plans(plans))
    return results, plans


def _print_budgets(console: Console, researcher: Client, dp_result: Any) -> None:
    if isinstance(dp_result, dict):
        console.print(f"\nDP result released: mean claim ≈ {dp_result['value']:.2f} "
                      f"({dp_result['mechanism']}, epsilon {dp_result['epsilon']:.3g}, "
                      f"delta {dp_result['delta']:.3g})")
    table = Table("dataset", "epsilon left", "of", "spent by views", "rule",
                  title="privacy budget ledger")
    for row in researcher.budgets():
        views = ", ".join(f"{k} {v:.3g}" for k, v in (row.get("views_epsilon") or {}).items())
        table.add_row(row["dataset"], f"{row['epsilon_left']:.3g}",
                      f"{row['epsilon_total']:.3g}", views or "-", row["rule"])
    console.print(table)


def _decode(kind: str, data: bytes) -> Any:
    if kind in ("table", "aggregate"):
        return pd.read_parquet(io.BytesIO(data))
    if kind == "model":  # skops: loaded only with scikit-learn/numpy types
        from veil.privacy.model_io import load_model

        return load_model(data, "skops")
    value = json.loads(data)
    return value["value"] if kind == "scalar" else value


def _plain(value: Any) -> Any:
    return value.to_dict(orient="records") if isinstance(value, pd.DataFrame) else value


def _print_results(console: Console, stage1: dict[str, Any], stage2: dict[str, Any],
                   outputs: dict[str, dict[str, Any]]) -> None:
    for name in sorted(outputs):
        o = outputs[name]
        console.print(f"\n[bold]{name}[/bold] ({o['kind']}): {o['status']}"
                      + (f" — {o['reason']}" if o.get("reason") else ""))
        if "mia_advantage" in (o.get("meta") or {}):  # what the reviewers saw
            console.print(f"  membership-inference audit (release executor): advantage "
                          f"{o['meta']['mia_advantage']:.3f}")
        table = Table("stage 1 (views)", "stage 2 (full data, released)")
        table.add_row(_show(stage1.get(name)), _show(stage2.get(name)))
        console.print(table)


def _show(value: Any) -> str:
    if isinstance(value, dict) and "mechanism" in value:  # a DP result
        shown = value["value"]
        if isinstance(shown, list):  # a DP group-by: one row per public key
            shown = pd.DataFrame(shown).to_string(index=False)
        elif isinstance(shown, int | float):
            shown = f"{shown:.2f}"
        return f"{shown}\n({value['mechanism']}, epsilon {value['epsilon']:.3g})"
    if isinstance(value, dict) and "coef" in value:  # a DP model from the release executor
        coef = ", ".join(f"{c:.3g}" for c in value["coef"])
        return (f"{value['model']}: coef [{coef}], intercept {value['intercept']:.3g}\n"
                f"(epsilon {value['epsilon']:.3g}, delta {value['delta']:.1g})")
    if hasattr(value, "coef_"):  # a scikit-learn model the notebook trained
        coef = ", ".join(f"{c:.3g}" for c in value.coef_.ravel())
        return f"{type(value).__name__}: coef [{coef}]"
    if isinstance(value, pd.DataFrame):
        return value.round(2).to_string(index=False)
    return "—" if value is None else str(value)


def _print_timings(console: Console, timings: Timings) -> None:
    table = Table("phase", "seconds", title="time per phase")
    for name, seconds in timings.phases:
        table.add_row(name, f"{seconds:.2f}")
    console.print(table)


def _admin_token(home: Path) -> str:
    from veil.identity import Role, create_user
    from veil.settings import Settings
    from veil.store import open_database

    settings = Settings(home=home)
    settings.ensure_dirs()
    db = open_database(settings.db_url)
    with db.transaction() as session:
        _, token = create_user(session, "admin", role=Role.ADMIN, party=None, actor="demo")
    db.dispose()
    return token


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(home: Path, port: int, insecure_dev: bool, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "veil", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--home", str(home)]
    if insecure_dev:
        cmd.append("--insecure-dev")
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DemoFailed(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise DemoFailed("the server did not become healthy within 60 s")
