"""The JupyterLab workspace: sidebar refresh latency and submit time, through a real `veil lab`.

Run: .venv/bin/python bench/lab.py [--runs 30] [--submits 10]
Starts a Veil server (no workers: nothing runs) with the demo's parties and data, and
`veil lab` on loopback with the researcher's token; then times what the sidebar calls:
datasets + budgets (one refresh of the datasets panel), the jobs panel, and Check + Submit of
the demo notebook (bundle measured, digest from the server's runtime, copy kept). The same
calls made directly on the Veil API are printed beside them: the difference is the
extension's overhead.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

import httpx
from _server import free_port, serving

from veil.demo.data import HOSPITAL_POLICY, INSURER_POLICY, hospital_visits, insurer_claims


def _time(name: str, fn: Callable[[], object], runs: int) -> None:
    fn()  # warm
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    print(f"{name:<52} p50 {statistics.median(samples):7.1f} ms   p95 {p95:7.1f} ms"
          f"   (n={runs})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--submits", type=int, default=10)
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    tmp = Path(tempfile.mkdtemp(prefix="veil-bench-lab-"))
    stack = ExitStack()  # the server, stopped at the end
    admin = stack.enter_context(serving(tmp / "home", workers=0, worker_poll_s=None))
    url = admin.url
    for party in ("hospital", "insurer", "university"):
        admin.create_party(party)
    hospital = admin.with_token(admin.create_user("alice", "provider", "hospital")["token"])
    insurer = admin.with_token(admin.create_user("bob", "provider", "insurer")["token"])
    researcher = admin.with_token(admin.create_user("carol", "consumer", "university")["token"])
    for client, name, frame, policy in ((hospital, "visits", hospital_visits(), HOSPITAL_POLICY),
                                        (insurer, "claims", insurer_claims(), INSURER_POLICY)):
        frame.to_csv(tmp / f"{name}.csv", index=False)
        client.upload(name, tmp / f"{name}.csv", policy=policy, policy_format="toml")
    root = tmp / "work"
    root.mkdir()
    notebook = resources.files("veil.demo").joinpath("analysis.ipynb").read_bytes()
    (root / "analysis.ipynb").write_bytes(notebook)

    lab_port, jtoken = free_port(), secrets.token_hex(16)
    env = {**os.environ, "VEIL_HOME": str(tmp / "lab-home"), "VEIL_URL": url,
           "VEIL_TOKEN": researcher.token or "", "JUPYTER_CONFIG_DIR": str(tmp / "jconf"),
           "JUPYTER_DATA_DIR": str(tmp / "jdata"), "JUPYTER_RUNTIME_DIR": str(tmp / "jrun")}
    log = (tmp / "lab.log").open("wb")
    start = time.perf_counter()
    lab = subprocess.Popen([sys.executable, "-m", "veil", "lab", "--no-browser", "--port",
                            str(lab_port), "--dir", str(root), "--",
                            f"--IdentityProvider.token={jtoken}",
                            *(["--allow-root"] if os.geteuid() == 0 else [])], env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    jl = httpx.Client(base_url=f"http://127.0.0.1:{lab_port}", timeout=60,
                      headers={"Authorization": f"token {jtoken}"})
    try:
        while True:
            try:
                if jl.get("/veil/status").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if lab.poll() is not None or time.perf_counter() - start > 120:
                raise SystemExit("veil lab did not start; see " + str(tmp / "lab.log"))
            time.sleep(0.1)
        print(f"veil lab ready (first /veil/status answered) in "
              f"{time.perf_counter() - start:.2f} s")

        def ok(response: httpx.Response) -> httpx.Response:
            response.raise_for_status()
            return response

        _time("direct API: GET /datasets + GET /budgets",
              lambda: (researcher.datasets(), researcher.budgets()), args.runs)
        _time("sidebar: GET /veil/datasets (datasets panel)",
              lambda: ok(jl.get("/veil/datasets")), args.runs)
        _time("sidebar: GET /veil/jobs (jobs panel, 0 jobs)",
              lambda: ok(jl.get("/veil/jobs")), args.runs)
        _time("direct API: Client.submit (demo notebook)",
              lambda: researcher.submit({"analysis.ipynb": notebook},
                                        entrypoint="analysis.ipynb",
                                        inputs=["hospital/visits", "insurer/claims"]),
              args.submits)
        _time("sidebar: POST /veil/inspect (Check: digest + pre-flight)",
              lambda: ok(jl.post("/veil/inspect", json={"path": "analysis.ipynb"})),
              args.submits)

        def check_and_submit() -> None:
            digest = ok(jl.post("/veil/inspect", json={"path": "analysis.ipynb"})).json()
            ok(jl.post("/veil/submit", json={"path": "analysis.ipynb",
                                             "digest": digest["digest"]}))

        _time("sidebar: Check + Submit (inspect, then submit)", check_and_submit, args.submits)
        jobs = len(researcher.jobs())
        _time(f"sidebar: GET /veil/jobs (jobs panel, {jobs} jobs)",
              lambda: ok(jl.get("/veil/jobs")), args.runs)
    finally:
        lab.terminate()
        lab.wait(timeout=20)
        stack.close()


if __name__ == "__main__":
    main()
