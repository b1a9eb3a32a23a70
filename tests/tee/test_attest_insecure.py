"""local-insecure evidence: only behind explicit flags, always contraindicated, never released."""

from __future__ import annotations

import pytest
from attest_support import BUNDLE, DATA_KEY, DATASET, ISSUER, JOB, PROVIDER, World, launch_log

from veil.crypto import hpke
from veil.tee.attestation import (
    AttestationError,
    Evidence,
    EvidenceError,
    InsecureAttester,
    KeyReleaseDenied,
    VerificationError,
    report_data,
)
from veil.tee.broker import KeyPolicy
from veil.tee.verifier import Verifier, verify_result


def _evidence(attester: InsecureAttester, nonce: str, pub: str) -> Evidence:
    log = launch_log()
    attester.measure(log)
    return attester.evidence(log, report_data(nonce, pub, JOB))


def test_insecure_attester_needs_explicit_flag() -> None:
    with pytest.raises(EvidenceError):
        InsecureAttester()


def test_verifier_refuses_insecure_evidence_by_default(world: World) -> None:
    attester = InsecureAttester(insecure=True)
    pub = hpke.encode_public_key(hpke.generate_private_key().public_key())
    ev = _evidence(attester, "n", pub)
    with pytest.raises(VerificationError, match="insecure"):
        world.verifier.appraise(ev, nonce="n", tee_public_key=pub, job=JOB)
    with pytest.raises(AttestationError):
        Verifier(world.ring, issuer=ISSUER, insecure_keys=[attester.public_key])


def test_insecure_result_is_contraindicated_and_never_releases(world: World) -> None:
    attester = InsecureAttester(insecure=True)
    verifier = Verifier(world.ring, issuer=ISSUER, insecure_keys=[attester.public_key],
                        allow_insecure=True, clock=world.clock)
    # Even the loosest valid policy that names the backend cannot accept it.
    world.store.add_dataset(DATASET, PROVIDER, KeyPolicy(
        allowed_backends=frozenset({"local-insecure"}), required_status="warning",
        require_hardware_backed=False, allow_debug=True), DATA_KEY)
    nonce = world.broker.challenge()
    pub = hpke.encode_public_key(hpke.generate_private_key().public_key())
    token = verifier.appraise(_evidence(attester, nonce, pub), nonce=nonce,
                              tee_public_key=pub, job=JOB)
    result = verify_result(token, world.ring.jwks(), issuer=ISSUER, now=world.clock.now)
    assert result.status == "contraindicated"
    assert result.hwmodel == "LOCAL_INSECURE"
    assert result.claims["x-veil"]["insecure"] is True
    assert result.bundle_digest == BUNDLE
    with pytest.raises(KeyReleaseDenied) as info:
        world.broker.release(dataset_id=DATASET, job=JOB, attestation_result=token,
                             tee_public_key=pub)
    assert info.value.reason == "status_insufficient"


def test_insecure_evidence_still_checks_replay_and_binding(world: World) -> None:
    attester = InsecureAttester(insecure=True)
    verifier = Verifier(world.ring, issuer=ISSUER, insecure_keys=[attester.public_key],
                        allow_insecure=True)
    pub = hpke.encode_public_key(hpke.generate_private_key().public_key())
    ev = _evidence(attester, "n", pub).to_dict()
    with pytest.raises(VerificationError):
        verifier.appraise(ev | {"event_log": launch_log("sha256:" + "ee" * 32).to_list()},
                          nonce="n", tee_public_key=pub, job=JOB)
    with pytest.raises(VerificationError):
        verifier.appraise(ev, nonce="other", tee_public_key=pub, job=JOB)
    with pytest.raises(EvidenceError):
        InsecureAttester(insecure=True).evidence(launch_log(), bytes(32))
