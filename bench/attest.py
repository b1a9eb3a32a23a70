"""Secure-stage attestation overhead: per-job swtpm attestation + key release, and verify time.

Run: .venv/bin/python bench/attest.py [--jobs 20]
Prints mean/p50/p95 in milliseconds; needs swtpm + tpm2-pytss (no TEE hardware).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from veil.crypto import hpke
from veil.crypto.keys import SigningKeyRing
from veil.tee.attestation import (
    SwtpmAttester,
    create_swtpm_state,
    enroll_ak,
    measure_launch,
    output_manifest_nonce,
    report_data,
    swtpm_missing,
)
from veil.tee.broker import InMemoryBrokerStore, KeyBroker, KeyPolicy, open_released_key
from veil.tee.verifier import Verifier

BUNDLE = "sha256:" + "ab" * 32
ISSUER = "https://veil.bench/verifier"


def _fmt(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (f"{name:<44} mean {statistics.mean(ms):7.1f} ms   p50 {statistics.median(ms):7.1f}"
            f" ms   p95 {p95:7.1f} ms   (n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    reason = swtpm_missing()
    if reason:
        sys.exit(f"cannot benchmark: {reason}")
    tmp = Path(tempfile.mkdtemp(prefix="veil-bench-"))
    state = create_swtpm_state(tmp / "state")
    ring = SigningKeyRing()
    verifier = Verifier(ring, issuer=ISSUER, trusted_aks=[enroll_ak(state)])
    store = InMemoryBrokerStore()
    store.add_dataset("acme/claims", "acme", KeyPolicy(
        allowed_backends=frozenset({"local-sandbox"}), required_status="warning",
        require_hardware_backed=False, allow_debug=True), bytes(32))
    broker = KeyBroker(store, trusted_jwks=ring.jwks, issuer=ISSUER)
    manifest = {"outputs": [{"name": "summary", "kind": "table", "file": "summary.csv",
                             "sha256": hashlib.sha256(b"x").hexdigest()}]}

    totals, starts, launch, verify, release, final = [], [], [], [], [], []
    token = ""
    for i in range(args.jobs):
        job = f"job-{i}"
        log = measure_launch(
            bundle_digest=BUNDLE, runtime={"name": "veil-python", "version": "3.11"},
            inputs=[{"id": "acme/claims", "sha256": "sha256:" + "22" * 32}],
            backend={"name": "local-sandbox"},
        )
        store.approve(provider="acme", job=job, bundle_digest=BUNDLE)
        t0 = time.perf_counter()
        with SwtpmAttester(state) as attester:
            t1 = time.perf_counter()
            attester.measure(log)
            nonce = broker.challenge()
            key = hpke.generate_private_key()
            pub = hpke.encode_public_key(key.public_key())
            evidence = attester.evidence(log, report_data(nonce, pub, job))
            t2 = time.perf_counter()
            result = verifier.appraise(evidence, nonce=nonce, tee_public_key=pub, job=job)
            t3 = time.perf_counter()
            sealed = broker.release(dataset_id="acme/claims", job=job,
                                    attestation_result=result, tee_public_key=pub)
            open_released_key(sealed, key, bundle_digest=BUNDLE, nonce=nonce)
            t4 = time.perf_counter()
            out_nonce = output_manifest_nonce(manifest)
            final_ev = attester.evidence(log, report_data(out_nonce, "", job))
            token = verifier.appraise_final(final_ev, output_manifest=manifest, job=job)
            t5 = time.perf_counter()
        t6 = time.perf_counter()
        starts.append(t1 - t0)
        launch.append(t2 - t1)
        verify.append(t3 - t2)
        release.append(t4 - t3)
        final.append(t5 - t4)
        totals.append(t6 - t0)

    print(f"swtpm attestation + key release, {args.jobs} jobs (target <= 500 ms per job)")
    print(_fmt("swtpm start + AK (per job)", starts))
    print(_fmt("PCR measure + challenge + quote", launch))
    print(_fmt("verifier appraisal -> ES256 result", verify))
    print(_fmt("broker policy + HPKE seal + open", release))
    print(_fmt("final quote + final token", final))
    print(_fmt("TOTAL per job (incl. swtpm stop/cleanup)", totals))

    (tmp / "jwks.json").write_text(json.dumps(ring.jwks()))
    (tmp / "token.jwt").write_text(token)
    cli = [sys.executable, "-c", "from veil.cli.attest import app; app()", "verify",
           str(tmp / "token.jwt"), "--jwks", str(tmp / "jwks.json")]
    from veil.tee.verifier import verify_result

    inproc = []
    for _ in range(50):
        t0 = time.perf_counter()
        verify_result(token, ring.jwks(), issuer=ISSUER)
        inproc.append(time.perf_counter() - t0)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        done = subprocess.run(cli, capture_output=True, text=True, check=False)
        runs.append(time.perf_counter() - t0)
        if done.returncode != 0:
            sys.exit(f"verify CLI failed: {done.stdout}{done.stderr}")
    print(_fmt("verify token in-process", inproc))
    print(_fmt("`veil attest verify` CLI (new process)", runs))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
