"""DPCA-PSI benchmark: two real processes over TLS on 127.0.0.1, plus OpenMined PSI for reference.

    .venv/bin/python bench/psi.py --sizes 1000,10000 [--scenarios ecdh,dpca3,payload]
                                  [--openmined-sizes 10000,100000]

Scenarios (N rows per party, N/2 shared): (a) `ecdh` single-ID ECDH-PSI cardinality (k = 1,
no DP, no payload); (b) `dpca3` 3-ID DPCA-PSI without payload (intersection split 85/10/5 over
the ID columns, tau from epsilon = 2, T = 10); (c) `payload` 1-ID DPCA-PSI with one uint64
feature per party, the masker packing rows (baseline); `payload-owner` the same with the owner
packing (the faster option). "proto s" is the protocol's wall time (the later of the two
parties; data generation and start-up excluded), "total s" the two processes from launch to
exit; per party:
CPU seconds of the protocol, bytes sent, peak RSS. OpenMined runs both roles in one process.
A throw-away $VEIL_HOME is used, so no real query budget is spent.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIOS = {"ecdh": (1, False, 0), "dpca3": (3, True, 0), "payload": (1, True, 1),
             "payload-owner": (1, True, 1)}
PACKING = {"payload-owner": "owner"}


def _data(role: str, n: int, k: int, features: int, seed: int):  # type: ignore[no-untyped-def]
    import numpy as np

    from veil.psi.session import PartyData

    shared = n // 2
    split = [0.85, 0.10, 0.05] if k == 3 else [1.0 / k] * k
    bounds = [0]
    for frac in split:
        bounds.append(min(shared, bounds[-1] + round(frac * shared)))
    bounds[-1] = shared
    cols: list[list[bytes]] = []
    for c in range(k):
        col = []
        for i in range(n):
            if i < shared and bounds[c] <= i < bounds[c + 1]:
                col.append(f"shared-{seed}-{c}-{i}".encode())
            else:
                col.append(f"{role}-{seed}-{c}-{i}".encode())
        cols.append(col)
    rng = np.random.default_rng(seed)
    feats = rng.integers(0, 1000, size=(n, features), dtype=np.uint64)
    return PartyData(cols, feats)


def worker(args: argparse.Namespace) -> None:
    from veil.psi.budget import QueryBudget
    from veil.psi.runtime import run_party
    from veil.psi.session import PsiConfig, PsiParty
    from veil.psi.transport import Identity, Listener, connect

    k, dp, f = SCENARIOS[args.scenario]
    home = Path(os.environ["VEIL_HOME"])
    me = Identity(home / f"{args.role}.crt", home / f"{args.role}.key")
    other = home / ("receiver.crt" if args.role == "sender" else "sender.crt")
    config = PsiConfig(args.role, input_dp=dp, epsilon=2.0, queries=10,
                       packing=PACKING.get(args.scenario, "masker"))
    party = PsiParty(config, _data(args.role, args.n, k, f, seed=7))  # the party owns the data
    if args.role == "sender":
        listener = Listener("127.0.0.1", args.port, me, other)
        channel = listener.accept(timeout=3600)
        listener.close()
    else:
        channel = connect("127.0.0.1", args.port, me, other, timeout=3600)
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    result = run_party(party, channel, dataset=f"bench-{time.time()}",
                       budget=QueryBudget(home / f"budget-{args.role}.json"))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "wall": time.perf_counter() - t0,
        "cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
        "sent": channel.bytes_sent, "received": channel.bytes_received,
        "rss_mb": r1.ru_maxrss / 1024, "sizes": list(result.round_sizes), "tau": result.tau,
    }))


def _pair(scenario: str, n: int, home: str, port: int) -> tuple[dict, dict, float]:
    env = {**os.environ, "VEIL_HOME": home}
    cmd = [sys.executable, __file__, "--worker", "--scenario", scenario, "--n", str(n),
           "--port", str(port)]
    t0 = time.perf_counter()
    s = subprocess.Popen([*cmd, "--role", "sender"], env=env, stdout=subprocess.PIPE, text=True)
    r = subprocess.Popen([*cmd, "--role", "receiver"], env=env, stdout=subprocess.PIPE, text=True)
    out_r, _ = r.communicate()
    out_s, _ = s.communicate()
    total = time.perf_counter() - t0
    if s.returncode or r.returncode:
        raise SystemExit(f"{scenario} N={n} failed")
    last_s, last_r = out_s.strip().splitlines()[-1], out_r.strip().splitlines()[-1]
    return json.loads(last_s), json.loads(last_r), total


def openmined(n: int) -> dict[str, float]:
    import private_set_intersection.python as psi

    server_items = [f"shared-{i}" if i < n // 2 else f"server-{i}" for i in range(n)]
    client_items = [f"shared-{i}" if i < n // 2 else f"client-{i}" for i in range(n)]
    t0, c0 = time.perf_counter(), time.process_time()
    server = psi.server.CreateWithNewKey(False)
    client = psi.client.CreateWithNewKey(False)
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items, psi.DataStructure.RAW)
    request = client.CreateRequest(client_items)
    response = server.ProcessRequest(request)
    size = client.GetIntersectionSize(setup, response)
    assert size == n // 2
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "bytes": setup.ByteSize() + request.ByteSize() + response.ByteSize()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--scenarios", default="ecdh,dpca3,payload")
    ap.add_argument("--openmined-sizes", default="10000,100000")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--scenario")
    ap.add_argument("--role")
    ap.add_argument("--n", type=int)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"cores: {os.cpu_count()}  (shared machine: figures are indicative)")
    from veil.psi.transport import generate_identity

    with tempfile.TemporaryDirectory() as home:
        os.environ["VEIL_HOME"] = home
        for role in ("sender", "receiver"):
            generate_identity(Path(home), role)
        print(f"{'scenario':9} {'N':>8} {'tau':>5} {'proto s':>8} {'total s':>8} "
              f"{'S cpu':>7} {'R cpu':>7} {'S->R MB':>8} {'R->S MB':>8} "
              f"{'S rss':>6} {'R rss':>6}  sizes")
        port = 40000 + os.getpid() % 20000
        for scenario in args.scenarios.split(","):
            for n in [int(x) for x in args.sizes.split(",")]:
                k, dp, _ = SCENARIOS[scenario]
                if dp:  # warm the on-disk tau cache outside the timing, in a separate process
                    # (so this parent's RSS, inherited by ru_maxrss across fork, stays small)
                    subprocess.run([sys.executable, "-c", "from veil.psi.tau import compute_tau;"
                                    f"compute_tau({k}, 10, 2.0, {n})"], check=True)
                port += 1
                s, r, total = _pair(scenario, n, home, port)
                wall = max(s["wall"], r["wall"])
                print(f"{scenario:9} {n:>8} {s['tau']:>5} {wall:8.2f} {total:8.2f} "
                      f"{s['cpu']:7.2f} {r['cpu']:7.2f} {s['sent'] / 1e6:8.2f} "
                      f"{r['sent'] / 1e6:8.2f} {s['rss_mb']:6.0f} {r['rss_mb']:6.0f}  "
                      f"{s['sizes']}", flush=True)
    for n in [int(x) for x in args.openmined_sizes.split(",") if x]:
        om = openmined(n)
        print(f"openmined {n:>8} {'-':>5} {om['wall']:8.2f} {'-':>8} {om['cpu']:7.2f} "
              f"{'(both)':>7} {om['bytes'] / 1e6:8.2f}", flush=True)


if __name__ == "__main__":
    main()
