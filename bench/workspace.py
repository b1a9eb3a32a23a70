"""The researcher's workspace: submit -> released overhead of the demo notebook, and pre-flight.

    .venv/bin/python bench/workspace.py [--runs 3] [--patients 3000]

Runs a real server (in process, one worker, the local sandbox) on loopback, uploads the demo's
hospital and insurer data (budgets raised to 1000 so repeated runs are not refused), pins the
demo notebook's plans from one stage-1 run, then after one warm-up run prints, as the median of
--runs runs:

* submit -> released: the wall time from `submit` to the job's `released` state with both
  providers approving and reviewing at once through the API, the notebook's own run time
  (sandbox time after the kernel is up), and the platform overhead = total - notebook;
* pre-flight: the wall time of `POST /jobs/preflight` for the same bundle, and its sandbox run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

from _server import serving

from veil.demo.data import HOSPITAL_POLICY, INSURER_POLICY, hospital_visits, insurer_claims
from veil.demo.story import INPUTS, NOTEBOOK, OUTPUTS, _run_locally


def _roomy(policy: str) -> str:
    return policy.replace("epsilon = 3.0", "epsilon = 1000.0")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--patients", type=int, default=3000)
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    tmp = Path(tempfile.mkdtemp(prefix="veil-bench-ws-"))
    stack = ExitStack()  # the server, stopped at the end
    admin = stack.enter_context(serving(tmp / "home", workers=1))
    url = admin.url
    for party in ("hospital", "insurer", "university"):
        admin.create_party(party)
    hospital = admin.with_token(admin.create_user("alice", "provider", "hospital")["token"])
    insurer = admin.with_token(admin.create_user("bob", "provider", "insurer")["token"])
    token = admin.create_user("carol", "consumer", "university")["token"]
    researcher = admin.with_token(token)
    work = tmp / "work"
    work.mkdir()
    for client, name, frame, policy in (
            (hospital, "visits", hospital_visits(args.patients), HOSPITAL_POLICY),
            (insurer, "claims", insurer_claims(args.patients), INSURER_POLICY)):
        frame.to_csv(work / f"{name}.csv", index=False)
        client.upload(name, work / f"{name}.csv", policy=_roomy(policy), policy_format="toml")
    notebook = resources.files("veil.demo").joinpath(NOTEBOOK).read_bytes()
    (work / NOTEBOOK).write_bytes(notebook)
    _, plans = _run_locally(work, url, token)

    def one_job() -> tuple[float, ...]:
        t0 = time.perf_counter()
        job = researcher.submit({NOTEBOOK: notebook}, entrypoint=NOTEBOOK, inputs=INPUTS,
                                outputs=OUTPUTS, plans=plans)
        for provider in (hospital, insurer):
            provider.approve(job["id"], job["digest"])
        job = researcher.wait(job["id"], {"output_review", "released", "failed"}, poll_s=0.02)
        if job["state"] == "failed":
            raise SystemExit(f"job failed: {job['reason']}")
        for output in job["outputs"]:
            if output["status"] == "pending_review":
                for provider in (hospital, insurer):
                    job = provider.review_output(job["id"], output["name"], "approve")
        assert job["state"] == "released", job["state"]
        total = time.perf_counter() - t0
        result = job["result"]
        start = result.get("sandbox_start_s") or 0.0
        notebook_s = result["duration_s"] - start
        executor = (result.get("executor") or {}).get("seconds") or 0.0
        attest = (result.get("attestation") or {}).get("overhead_s") or 0.0
        return total, notebook_s, total - notebook_s, start, executor, attest

    def one_preflight() -> tuple[float, float]:
        t0 = time.perf_counter()
        report = researcher.preflight({NOTEBOOK: notebook}, entrypoint=NOTEBOOK, inputs=INPUTS,
                                      outputs=OUTPUTS, plans=plans)
        if not report["ok"]:
            raise SystemExit(f"pre-flight failed: {report['error']}")
        return time.perf_counter() - t0, report["run_s"]

    one_job()  # warm-up: imports, swtpm, caches
    one_preflight()
    jobs = [one_job() for _ in range(args.runs)]
    flights = [one_preflight() for _ in range(args.runs)]
    total, nb_s, overhead, start, executor, attest = (statistics.median(c)
                                                      for c in zip(*jobs, strict=True))
    pf_total, pf_run = (statistics.median(c) for c in zip(*flights, strict=True))
    print(f"\ndemo notebook, {args.patients} patients, median of {args.runs} warm runs:")
    print(f"submit -> released      {total:7.2f} s  (notebook's own run {nb_s:.2f} s; "
          f"platform overhead {overhead:.2f} s)")
    print(f"  of the overhead: sandbox + kernel start {start:.2f} s, release executor (DP "
          f"plans, DP training, membership audit) {executor:.2f} s, attestation + key release "
          f"{attest:.2f} s, the rest (HTTP, queue, gate, approvals, reviews) "
          f"{overhead - start - executor - attest:.2f} s")
    print(f"pre-flight (POST)       {pf_total:7.2f} s  (sandbox run {pf_run:.2f} s; preview and "
          f"HTTP {pf_total - pf_run:.2f} s)")
    stack.close()


if __name__ == "__main__":
    main()
