"""Real software-TPM evidence end to end: challenge -> launch -> quote -> verify -> release."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import psutil
import pytest
from attest_support import (
    BUNDLE,
    DATA_KEY,
    DATASET,
    ISSUER,
    JOB,
    OTHER_BUNDLE,
    PROVIDER,
    World,
    attest_launch,
    launch_log,
    swtpm_verifier,
)

from veil.crypto import hpke
from veil.tee.attestation import (
    Evidence,
    KeyReleaseDenied,
    SwtpmAttester,
    SwtpmError,
    VerificationError,
    create_swtpm_state,
    output_manifest_nonce,
    report_data,
)
from veil.tee.broker import KeyPolicy, open_released_key
from veil.tee.verifier import Verifier, verify_result

pytestmark = pytest.mark.tpm


def _swtpm_children() -> list[psutil.Process]:
    return [p for p in psutil.Process(os.getpid()).children(recursive=True)
            if p.name() == "swtpm"]


def test_full_flow_releases_key_and_token_is_honest(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    verifier = swtpm_verifier(world, pinned_ak)
    nonce = world.broker.challenge()
    token, pub, tee_key = attest_launch(swtpm_state, verifier, nonce)
    result = verify_result(token, world.ring.jwks(), issuer=ISSUER, now=world.clock.now)
    assert result.hwmodel == "LOCAL_SWTPM"
    assert result.dbgstat == "enabled"
    assert result.status == "warning"
    assert result.hardware_backed is False
    assert result.bundle_digest == BUNDLE
    assert result.claims["submods"]["inputs"]["datasets"][0]["id"] == DATASET
    assert result.claims["eat_nonce"] == nonce
    sealed = world.broker.release(dataset_id=DATASET, job=JOB, attestation_result=token,
                                  tee_public_key=pub)
    assert open_released_key(sealed, tee_key, bundle_digest=BUNDLE, nonce=nonce) == DATA_KEY
    assert not _swtpm_children()


def test_swtpm_is_killed_and_its_dir_removed(swtpm_state: Path, tmp_path: Path) -> None:
    with SwtpmAttester(swtpm_state, workdir_parent=tmp_path) as attester:
        assert len(_swtpm_children()) == 1
        assert len(list(tmp_path.iterdir())) == 1
        attester.measure(launch_log())
    assert not _swtpm_children()
    assert list(tmp_path.iterdir()) == []


def test_measurement_pcr_starts_fresh_and_log_cannot_be_measured_twice(
    swtpm_state: Path,
) -> None:
    with SwtpmAttester(swtpm_state) as attester:
        assert attester.read_register() == bytes(32)
        attester.measure(launch_log())
        assert attester.read_register() == launch_log().replay()
        with pytest.raises(SwtpmError, match="not fresh"):
            attester.measure(launch_log())
        with pytest.raises(SwtpmError):
            attester.evidence(launch_log(), b"short")


def test_hardware_policy_is_never_satisfied_by_swtpm(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    world.store.add_dataset(DATASET, PROVIDER, KeyPolicy(
        allowed_backends=frozenset({"local-sandbox"}), required_status="warning",
        require_hardware_backed=True, allow_debug=True), DATA_KEY)
    nonce = world.broker.challenge()
    token, pub, _ = attest_launch(swtpm_state, swtpm_verifier(world, pinned_ak), nonce)
    with pytest.raises(KeyReleaseDenied) as info:
        world.broker.release(dataset_id=DATASET, job=JOB, attestation_result=token,
                             tee_public_key=pub)
    assert info.value.reason == "hardware_required"


def test_debug_swtpm_evidence_under_no_debug_policy_is_refused(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    world.store.add_dataset(DATASET, PROVIDER, KeyPolicy(
        allowed_backends=frozenset({"local-sandbox"}), required_status="warning",
        require_hardware_backed=False, allow_debug=False), DATA_KEY)
    nonce = world.broker.challenge()
    token, pub, _ = attest_launch(swtpm_state, swtpm_verifier(world, pinned_ak), nonce)
    with pytest.raises(KeyReleaseDenied) as info:
        world.broker.release(dataset_id=DATASET, job=JOB, attestation_result=token,
                             tee_public_key=pub)
    assert info.value.reason == "debug_forbidden"


def test_evidence_for_a_different_bundle_is_refused(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    nonce = world.broker.challenge()
    token, pub, _ = attest_launch(
        swtpm_state, swtpm_verifier(world, pinned_ak), nonce, bundle=OTHER_BUNDLE
    )
    with pytest.raises(KeyReleaseDenied) as info:
        world.broker.release(dataset_id=DATASET, job=JOB, attestation_result=token,
                             tee_public_key=pub)
    assert info.value.reason == "bundle_not_approved"


def _evidence(state: Path, nonce: str, pub: str, job: str = JOB) -> Evidence:
    log = launch_log()
    with SwtpmAttester(state) as attester:
        attester.measure(log)
        return attester.evidence(log, report_data(nonce, pub, job))


def test_quote_whose_pcr_does_not_match_event_log_is_refused(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    pub = hpke.encode_public_key(hpke.generate_private_key().public_key())
    ev = _evidence(swtpm_state, "n1", pub).to_dict()
    # Claim a different (approved!) bundle in the log than the one measured into the PCR.
    ev["event_log"] = launch_log(OTHER_BUNDLE).to_list()
    with pytest.raises(VerificationError, match="replayed event log"):
        swtpm_verifier(world, pinned_ak).appraise(ev, nonce="n1", tee_public_key=pub, job=JOB)


def test_report_data_must_bind_nonce_key_and_job(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    verifier = swtpm_verifier(world, pinned_ak)
    pub = hpke.encode_public_key(hpke.generate_private_key().public_key())
    other = hpke.encode_public_key(hpke.generate_private_key().public_key())
    ev = _evidence(swtpm_state, "n1", pub)
    for kwargs in ({"nonce": "n2", "tee_public_key": pub, "job": JOB},
                   {"nonce": "n1", "tee_public_key": other, "job": JOB},
                   {"nonce": "n1", "tee_public_key": pub, "job": "job-other"}):
        with pytest.raises(VerificationError, match="report_data"):
            verifier.appraise(ev, **kwargs)
    # Rewriting report_data in the envelope does not help: the quote itself binds it.
    forged = ev.to_dict() | {"report_data": report_data("n1", other, JOB).hex()}
    with pytest.raises(VerificationError, match="qualifying data"):
        verifier.appraise(forged, nonce="n1", tee_public_key=other, job=JOB)


def test_tampered_quote_and_signature_are_refused(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    verifier = swtpm_verifier(world, pinned_ak)
    pub = hpke.encode_public_key(hpke.generate_private_key().public_key())
    ev = _evidence(swtpm_state, "n1", pub).to_dict()
    quote = bytearray(base64.b64decode(ev["quote"]))
    quote[-1] ^= 1
    with pytest.raises(VerificationError, match="signature"):
        verifier.appraise(ev | {"quote": base64.b64encode(bytes(quote)).decode()},
                          nonce="n1", tee_public_key=pub, job=JOB)
    with pytest.raises(VerificationError, match="base64"):
        verifier.appraise(ev | {"signature": "%%%"}, nonce="n1", tee_public_key=pub, job=JOB)


def test_quote_from_an_unpinned_tpm_is_refused(
    world: World, swtpm_state: Path, tmp_path: Path
) -> None:
    rogue = create_swtpm_state(tmp_path / "rogue")
    pub = hpke.encode_public_key(hpke.generate_private_key().public_key())
    ev = _evidence(rogue, "n1", pub)
    with pytest.raises(VerificationError, match="not pinned"):
        Verifier(world.ring, issuer=ISSUER).appraise(ev, nonce="n1", tee_public_key=pub,
                                                     job=JOB)


def test_malformed_evidence_is_refused(world: World, pinned_ak: Any) -> None:
    from veil.tee.attestation import EvidenceError

    verifier = swtpm_verifier(world, pinned_ak)
    bads: list[Any] = [{}, {"type": "x"}, [], {
        "type": "application/vnd.veil.local-swtpm-quote+json", "event_log": [],
        "report_data": "", "quote": "", "signature": "", "signer": "", "extra": 1}]
    for bad in bads:
        with pytest.raises(EvidenceError):
            verifier.appraise(bad, nonce="n", tee_public_key="k", job=JOB)


def test_final_token_binds_output_manifest(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    verifier = swtpm_verifier(world, pinned_ak)
    manifest = {"outputs": [{"name": "summary", "kind": "table", "file": "summary.csv",
                             "sha256": "sha256:" + "33" * 32}]}
    nonce = output_manifest_nonce(manifest)
    log = launch_log()
    with SwtpmAttester(swtpm_state) as attester:
        attester.measure(log)
        ev = attester.evidence(log, report_data(nonce, "", JOB))
    token = verifier.appraise_final(ev, output_manifest=manifest, job=JOB)
    result = verify_result(token, world.ring.jwks(), issuer=ISSUER, now=world.clock.now)
    assert result.phase == "final" and result.nonce == nonce
    assert result.claims["submods"]["outputs"]["files"][0]["name"] == "summary"
    changed = {"outputs": [dict(manifest["outputs"][0], sha256="sha256:" + "44" * 32)]}
    with pytest.raises(VerificationError):
        verifier.appraise_final(ev, output_manifest=changed, job=JOB)
    with pytest.raises(VerificationError, match="manifest"):
        verifier.appraise_final(ev, output_manifest={"outputs": "x"}, job=JOB)
    # A final token can never release a key.
    with pytest.raises(KeyReleaseDenied):
        world.broker.release(dataset_id=DATASET, job=JOB, attestation_result=token,
                             tee_public_key="")


def test_rotated_verifier_key_still_verifies_then_retires(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    nonce = world.broker.challenge()
    token, _, _ = attest_launch(swtpm_state, swtpm_verifier(world, pinned_ak), nonce)
    old = world.ring.current_kid
    world.ring.rotate()
    verify_result(token, world.ring.jwks(), issuer=ISSUER, now=world.clock.now)
    world.ring.retire(old)
    with pytest.raises(VerificationError, match="unknown key"):
        verify_result(token, world.ring.jwks(), issuer=ISSUER, now=world.clock.now)


def test_missing_swtpm_binary_fails_closed(
    swtpm_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from veil.tee.attestation import SwtpmUnavailableError, swtpm_missing

    monkeypatch.setenv("PATH", "/nonexistent")
    assert swtpm_missing() is not None
    with pytest.raises(SwtpmUnavailableError, match="swtpm"):
        SwtpmAttester(swtpm_state)


def test_bad_state_dirs_are_refused(swtpm_state: Path, tmp_path: Path) -> None:
    with pytest.raises(SwtpmError, match="no swtpm state"):
        SwtpmAttester(tmp_path)
    with pytest.raises(SwtpmError, match="refusing to overwrite"):
        create_swtpm_state(swtpm_state)



def test_a_run_folder_too_deep_for_a_socket_holds_a_link_to_the_state(
    swtpm_state: Path, tmp_path: Path
) -> None:
    """Unix socket paths are short; the state then lives in a short temp dir, linked from the
    run folder so a sweep after a crash still finds it."""
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    with SwtpmAttester(swtpm_state, workdir_parent=deep) as attester:
        (link,) = deep.iterdir()
        assert link.name.startswith(f"{os.getpid()}-") and link.is_symlink()
        state = link.resolve()
        assert (state / "tpm2-00.permall").is_file()
        assert attester.read_register() == bytes(32)
    assert list(deep.iterdir()) == [] and not state.exists()


def test_workload_key_request_round_trip(
    world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    from veil.tee.broker import WorkloadKeyRequest

    request = WorkloadKeyRequest(nonce=world.broker.challenge(), job=JOB)
    log = launch_log()
    with SwtpmAttester(swtpm_state) as attester:
        attester.measure(log)
        evidence = attester.evidence(log, request.report_data)
    token = swtpm_verifier(world, pinned_ak).appraise(
        evidence, nonce=request.nonce, tee_public_key=request.tee_public_key, job=JOB)
    sealed = world.broker.release(dataset_id=DATASET, job=JOB, attestation_result=token,
                                  tee_public_key=request.tee_public_key)
    assert request.open(sealed.to_dict(), bundle_digest=BUNDLE) == DATA_KEY
    with pytest.raises(hpke.HpkeError):
        request.open(sealed, bundle_digest=OTHER_BUNDLE)
