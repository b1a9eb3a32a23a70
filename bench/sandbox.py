"""Sandbox latency figures: `.venv/bin/python bench/sandbox.py [runs]` (default 10 runs).

Prints p50/p90 of: bwrap around a trivial `python -c pass`; a trivial .py job through
BubblewrapBackend (start = time to the workload's first instruction); a one-cell notebook job
(start includes the ipykernel start-up, which dominates).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from veil.tee.sandbox import BubblewrapBackend, SandboxLimits, SandboxRequest
from veil.tee.sandbox._bwrap import _runtime


def _pcts(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]
    return f"p50 {statistics.median(xs) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


def bare_bwrap(runs: int, bwrap: str) -> list[float]:
    rt = _runtime()
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--uid", "65534", "--gid", "65534",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # fmt: skip
    for host, dest in rt.binds:
        argv += ["--ro-bind", host, dest]
    argv += [rt.python, "-s", "-P", "-c", "pass"]
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True)
        out.append(time.perf_counter() - t0)
    return out


def jobs(runs: int, entry: str, write: object) -> tuple[list[float], list[float]]:
    backend = BubblewrapBackend()
    starts, totals = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bundle").mkdir()
        (root / "inputs").mkdir()
        write(root / "bundle" / entry)  # type: ignore[operator]
        for _ in range(runs):
            out = root / "outputs"
            shutil.rmtree(out, ignore_errors=True)
            req = SandboxRequest(
                root / "bundle", entry, root / "inputs", out, SandboxLimits(wall_seconds=120)
            )
            res = backend.run(req)
            if not res.ok:
                raise SystemExit(f"benchmark job failed: {res.reason}")
            assert res.sandbox_start_s is not None
            starts.append(res.sandbox_start_s)
            totals.append(res.duration_s)
    return starts, totals


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SystemExit("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    print(f"runs per figure: {runs}")
    print(f"bwrap + python -c pass (wall)      {_pcts(bare_bwrap(runs, bwrap))}")
    starts, totals = jobs(runs, "job.py", lambda p: p.write_text("x = 1\n"))
    print(f".py job: sandbox start              {_pcts(starts)}")
    print(f".py job: total                      {_pcts(totals)}")

    def nb(p: Path) -> None:
        nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), p)

    starts, totals = jobs(runs, "job.ipynb", nb)
    print(f"notebook job: start (incl. kernel)  {_pcts(starts)}")
    print(f"notebook job: total                 {_pcts(totals)}")


if __name__ == "__main__":
    main()
