"""Key broker policy and protocol. Results here are signed with the verifier's own key so the
policy logic is tested without a TPM; tests/tee/test_attest_swtpm.py covers real evidence."""

from __future__ import annotations

from typing import Any

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
)
from pydantic import ValidationError

from veil.crypto import hpke
from veil.crypto.keys import SigningKeyRing
from veil.tee.attestation import KeyReleaseDenied
from veil.tee.broker import KeyBroker, KeyPolicy, open_released_key

STRICT = KeyPolicy(allowed_backends=frozenset({"gcp-confidential-space"}))


def _strict(w: World) -> None:
    w.store.add_dataset(DATASET, PROVIDER, STRICT, DATA_KEY)


def _nonce(token: str) -> str:
    import base64
    import json

    body = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(body + "==="))["eat_nonce"])


def _release(w: World, token: str, pub: str, *, job: str = JOB, dataset: str = DATASET) -> Any:
    return w.broker.release(dataset_id=dataset, job=job, attestation_result=token,
                            tee_public_key=pub)


def _denied(w: World, token: str, pub: str, reason: str, **kw: Any) -> None:
    with pytest.raises(KeyReleaseDenied) as info:
        _release(w, token, pub, **kw)
    assert info.value.reason == reason
    event, fields = w.store.events[-1]
    assert event == "kbs.release.denied" and fields["reason"] == reason
    assert DATA_KEY.hex() not in repr(w.store.events)


def test_hardware_result_under_strict_policy_releases_sealed_key(world: World) -> None:
    _strict(world)
    token, pub, tee_key = world.sign_result()
    sealed = _release(world, token, pub)
    key = open_released_key(sealed.to_dict(), tee_key, bundle_digest=BUNDLE, nonce=_nonce(token))
    assert key == DATA_KEY
    assert world.store.events[-1][0] == "kbs.release.granted"
    assert [e for e, _ in world.store.events] == ["kbs.challenge", "kbs.release.granted"]


def test_released_key_does_not_open_in_another_context(world: World) -> None:
    _strict(world)
    token, pub, tee_key = world.sign_result()
    sealed = _release(world, token, pub)
    with pytest.raises(hpke.HpkeError):
        open_released_key(sealed, tee_key, bundle_digest=OTHER_BUNDLE, nonce=_nonce(token))
    with pytest.raises(hpke.HpkeError):
        open_released_key(sealed, hpke.generate_private_key(), bundle_digest=BUNDLE,
                          nonce=_nonce(token))


def test_replayed_nonce_is_refused(world: World) -> None:
    _strict(world)
    token, pub, _ = world.sign_result()
    _release(world, token, pub)
    _denied(world, token, pub, "nonce_invalid")


def test_nonce_never_issued_or_expired_is_refused(world: World) -> None:
    _strict(world)

    def foreign(claims: dict[str, Any]) -> None:
        claims["eat_nonce"] = "made-up"

    token, pub, _ = world.sign_result(foreign)
    _denied(world, token, pub, "nonce_invalid")
    token, pub, _ = world.sign_result()
    world.clock.now += 61  # nonce TTL is 60 s; the token itself is still valid
    _denied(world, token, pub, "nonce_invalid")


def test_expired_token_is_refused(world: World) -> None:
    _strict(world)
    token, pub, _ = world.sign_result()
    world.clock.now += 400
    _denied(world, token, pub, "token_expired")


def test_future_dated_token_is_refused(world: World) -> None:
    _strict(world)

    def future(claims: dict[str, Any]) -> None:
        claims["iat"] = claims["nbf"] = claims["iat"] + 3600
        claims["exp"] += 3600

    token, pub, _ = world.sign_result(future)
    _denied(world, token, pub, "token_not_yet_valid")


def test_token_signed_by_unknown_key_is_refused(world: World) -> None:
    _strict(world)
    token, pub, _ = world.sign_result()
    forger = SigningKeyRing()
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))
    _denied(world, forger.sign(claims), pub, "unknown_signer")


def test_digest_never_approved_is_refused(world: World) -> None:
    _strict(world)

    def other(claims: dict[str, Any]) -> None:
        claims["submods"]["bundle"]["digest"] = OTHER_BUNDLE

    token, pub, _ = world.sign_result(other)
    _denied(world, token, pub, "bundle_not_approved")


def test_approval_for_another_job_does_not_count(world: World) -> None:
    _strict(world)
    world.store.approve(provider=PROVIDER, job="job-7", bundle_digest=OTHER_BUNDLE)

    def other(claims: dict[str, Any]) -> None:
        claims["submods"]["bundle"]["digest"] = OTHER_BUNDLE

    token, pub, _ = world.sign_result(other)
    _denied(world, token, pub, "bundle_not_approved")


def test_revoked_approval_between_approval_and_run_is_refused(world: World) -> None:
    _strict(world)
    token, pub, _ = world.sign_result()
    world.store.revoke(provider=PROVIDER, job=JOB, bundle_digest=BUNDLE)
    _denied(world, token, pub, "bundle_not_approved")


def test_report_data_not_binding_presented_key_is_refused(world: World) -> None:
    _strict(world)
    token, _, _ = world.sign_result()
    attacker = hpke.encode_public_key(hpke.generate_private_key().public_key())
    _denied(world, token, attacker, "key_not_bound")


def test_result_for_another_job_is_refused(world: World) -> None:
    _strict(world)
    token, pub, _ = world.sign_result()
    _denied(world, token, pub, "job_mismatch", job="job-other")


def test_debug_evidence_under_policy_forbidding_it_is_refused(world: World) -> None:
    _strict(world)

    def debug(claims: dict[str, Any]) -> None:
        claims["dbgstat"] = "enabled"

    token, pub, _ = world.sign_result(debug)
    _denied(world, token, pub, "debug_forbidden")


def test_local_backend_never_satisfies_hardware_policy(world: World) -> None:
    world.store.add_dataset(DATASET, PROVIDER, STRICT.model_copy(
        update={"allowed_backends": frozenset({"local-sandbox"}), "required_status": "warning",
                "allow_debug": True}), DATA_KEY)

    def local_claiming_hardware(claims: dict[str, Any]) -> None:
        claims["x-veil"]["backend"] = "local-sandbox"
        claims["hwmodel"] = "LOCAL_SWTPM"
        claims["x-veil"]["hardware_backed"] = True  # a lying claim changes nothing

    token, pub, _ = world.sign_result(local_claiming_hardware)
    _denied(world, token, pub, "hardware_required")


def test_backend_not_allowed_and_insufficient_status_are_refused(world: World) -> None:
    _strict(world)

    def warning(claims: dict[str, Any]) -> None:
        claims["ear.status"] = "warning"

    token, pub, _ = world.sign_result(warning)
    _denied(world, token, pub, "status_insufficient")

    def azure(claims: dict[str, Any]) -> None:
        claims["x-veil"]["backend"] = "azure-maa"

    token, pub, _ = world.sign_result(azure)
    _denied(world, token, pub, "backend_not_allowed")


def test_contraindicated_is_refused_even_by_the_loosest_policy(world: World) -> None:
    def insecure(claims: dict[str, Any]) -> None:
        claims["ear.status"] = "contraindicated"
        claims["x-veil"]["backend"] = "local-sandbox"
        claims["x-veil"]["hardware_backed"] = False

    token, pub, _ = world.sign_result(insecure)
    _denied(world, token, pub, "status_insufficient")


def test_token_older_than_policy_allows_is_refused(world: World) -> None:
    world.store.add_dataset(DATASET, PROVIDER, STRICT.model_copy(
        update={"max_token_age_s": 10}), DATA_KEY)
    token, pub, _ = world.sign_result()
    world.clock.now += 30
    _denied(world, token, pub, "token_too_old")


def test_unknown_dataset_and_final_phase_tokens_are_refused(world: World) -> None:
    token, pub, _ = world.sign_result()
    _denied(world, token, pub, "unknown_dataset", dataset="nobody/nothing")

    def final(claims: dict[str, Any]) -> None:
        claims["x-veil"]["phase"] = "final"

    token, pub, _ = world.sign_result(final)
    _denied(world, token, pub, "wrong_phase")


def test_garbage_token_is_refused(world: World) -> None:
    _denied(world, "garbage", "x", "token_invalid")


def test_default_policy_denies_everything_local(world: World) -> None:
    world.store.add_dataset(DATASET, PROVIDER, KeyPolicy(), DATA_KEY)
    token, pub, _ = world.sign_result()
    _denied(world, token, pub, "backend_not_allowed")


@pytest.mark.parametrize(
    "fields",
    [
        {"allow_dev_backends": True},
        {"required_status": "contraindicated"},
        {"required_status": "none"},
        {"max_token_age_s": 0},
        {"max_token_age_s": 10**6},
    ],
)
def test_policy_rejects_unknown_fields_and_bad_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        KeyPolicy(**fields)


def test_broker_rejects_bad_configuration() -> None:
    from veil.tee.broker import InMemoryBrokerStore

    with pytest.raises(ValueError):
        KeyBroker(InMemoryBrokerStore(), trusted_jwks={"keys": []}, issuer=ISSUER,
                  nonce_ttl_s=0)


def test_challenges_are_unique_and_audited(world: World) -> None:
    nonces = {world.broker.challenge() for _ in range(20)}
    assert len(nonces) == 20
    assert sum(1 for e, _ in world.store.events if e == "kbs.challenge") == 20
