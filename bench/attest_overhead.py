"""Attestation + key-release overhead of one job, with the real swtpm (no server).

Prints median seconds for: swtpm start + launch measurement, one key release (quote,
appraisal, broker decision, HPKE seal/open), and the final quote over an output manifest.
Run: .venv/bin/python bench/attest_overhead.py [rounds]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from veil.crypto.keys import SigningKeyRing
from veil.tee.attestation import (
    SwtpmAttester,
    create_swtpm_state,
    enroll_ak,
    measure_launch,
    report_data,
)
from veil.tee.broker import InMemoryBrokerStore, KeyBroker, KeyPolicy, WorkloadKeyRequest
from veil.tee.verifier import Verifier


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp:
        template = create_swtpm_state(Path(tmp) / "tpm")
        ring = SigningKeyRing()
        verifier = Verifier(ring, issuer="bench", trusted_aks=[enroll_ak(template)])
        store = InMemoryBrokerStore()
        digest = "sha256:" + "ab" * 32
        store.add_dataset("ds", "p", KeyPolicy(allowed_backends=frozenset({"local-sandbox"}),
                                               required_status="warning",
                                               require_hardware_backed=False, allow_debug=True),
                          bytes(32))
        store.approve(provider="p", job="job", bundle_digest=digest)
        broker = KeyBroker(store, trusted_jwks=ring.jwks, issuer="bench")
        launch, release, final = [], [], []
        for _ in range(rounds):
            log = measure_launch(bundle_digest=digest, runtime={"v": "1"},
                                 inputs=[{"id": "ds", "sha256": digest}], backend={"n": "b"})
            t0 = time.perf_counter()
            with SwtpmAttester(template) as att:
                att.measure(log)
                t1 = time.perf_counter()
                req = WorkloadKeyRequest(nonce=broker.challenge(), job="job")
                ev = att.evidence(log, req.report_data)
                token = verifier.appraise(ev, nonce=req.nonce, tee_public_key=req.tee_public_key,
                                          job="job")
                sealed = broker.release(dataset_id="ds", job="job", attestation_result=token,
                                        tee_public_key=req.tee_public_key)
                req.open(sealed, bundle_digest=digest)
                t2 = time.perf_counter()
                manifest = {"outputs": [{"name": "x", "sha256": "00" * 32}]}
                from veil.tee.attestation import output_manifest_nonce

                ev = att.evidence(log, report_data(output_manifest_nonce(manifest), "", "job"))
                verifier.appraise_final(ev, output_manifest=manifest, job="job")
                t3 = time.perf_counter()
            launch.append(t1 - t0)
            release.append(t2 - t1)
            final.append(t3 - t2)
    for name, xs in (("swtpm start + launch measurement", launch),
                     ("one key release (quote+appraise+broker+HPKE)", release),
                     ("final attestation over outputs", final)):
        print(f"{name:48s} median {statistics.median(xs) * 1000:8.1f} ms  (n={len(xs)})")
    total = statistics.median(launch) + statistics.median(release) * 2 + statistics.median(final)
    print(f"{'per job with 2 datasets (sum of medians)':48s} {total * 1000:15.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
