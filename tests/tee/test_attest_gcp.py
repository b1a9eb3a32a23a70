"""Confidential Space adapter, with tokens signed by the test's own RSA key set."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey
from pydantic import ValidationError

from veil.crypto import hpke
from veil.crypto.jose import sign_jwt
from veil.tee.gcp import (
    GOOGLE_ISSUER,
    ConfidentialSpaceError,
    ConfidentialSpacePolicy,
    binding_nonce,
    verify_confidential_space_token,
)

DIGEST = "sha256:667b7cc9" + "0" * 56
AUD = "kbs://veil"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = {"keys": [RSAKey.import_key(_KEY.public_key(), {"kid": "g1", "use": "sig"}).as_dict()]}
POLICY = ConfidentialSpacePolicy(audience=AUD, allowed_image_digests=frozenset({DIGEST}))
PUB = hpke.encode_public_key(hpke.generate_private_key().public_key())
NONCE = binding_nonce("broker-nonce", PUB, "job-42")


def _claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "aud": AUD, "iss": GOOGLE_ISSUER, "iat": now, "nbf": now, "exp": now + 3600,
        "sub": "https://www.googleapis.com/compute/v1/projects/p/zones/z/instances/i",
        "eat_nonce": ["thisIsAcustomNonce", NONCE], "secboot": True, "oemid": 11129,
        "hwmodel": "GCP_AMD_SEV", "swname": "CONFIDENTIAL_SPACE", "swversion": ["230902"],
        "dbgstat": "disabled-since-boot",
        "submods": {
            "confidential_space": {"support_attributes": ["LATEST", "STABLE", "USABLE"]},
            "container": {
                "image_reference": "us-docker.pkg.dev/p/r/workload:latest",
                "image_digest": DIGEST, "restart_policy": "Never",
                "image_id": "sha256:f2484d43", "env_override": None, "cmd_override": None,
            },
            "gce": {"zone": "us-east4-c", "project_id": "p"},
        },
    }


def _token(patch: Callable[[dict[str, Any]], None] | None = None, key: Any = _KEY) -> str:
    claims = copy.deepcopy(_claims())
    if patch:
        patch(claims)
    return sign_jwt(claims, key, "g1", alg="RS256")


def test_valid_token_passes_policy() -> None:
    out = verify_confidential_space_token(_token(), JWKS, POLICY, expected_nonce=NONCE)
    assert out.image_digest == DIGEST
    assert out.hwmodel == "GCP_AMD_SEV"
    assert 8 <= len(NONCE) <= 88


def test_single_string_nonce_is_accepted() -> None:
    def single(c: dict[str, Any]) -> None:
        c["eat_nonce"] = NONCE

    verify_confidential_space_token(_token(single), JWKS, POLICY, expected_nonce=NONCE)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def patch(c: dict[str, Any]) -> None:
        node = c
        *head, last = path.split(".")
        for name in head:
            node = node[name]
        node[last] = value

    return patch


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        (_set("eat_nonce", ["other-nonce-1234"]), "nonce"),
        (_set("swname", "GCE"), "swname"),
        (_set("hwmodel", "GCP_SHIELDED_VM"), "hwmodel"),
        (_set("dbgstat", "enabled"), "debug"),
        (_set("submods.confidential_space.support_attributes", ["USABLE"]), "supported"),
        (_set("submods.confidential_space.support_attributes", []), "supported"),
        (_set("submods.container.image_digest", "sha256:" + "f" * 64), "digest"),
        (_set("submods.container.env_override", {"X": "1"}), "overrode"),
        (_set("submods.container.cmd_override", ["sh"]), "overrode"),
        (_set("aud", "https://sts.googleapis.com"), "audience"),
        (_set("iss", "https://evil.example"), "issuer"),
        (_set("exp", 1), "expired"),
        (_set("iat", int(time.time()) + 7200), "future"),
        (_set("submods", None), "submods"),
    ],
)
def test_policy_violations_are_refused(
    patch: Callable[[dict[str, Any]], None], match: str
) -> None:
    with pytest.raises(ConfidentialSpaceError, match=match):
        verify_confidential_space_token(_token(patch), JWKS, POLICY, expected_nonce=NONCE)


def test_debug_is_accepted_only_when_policy_allows_it() -> None:
    loose = POLICY.model_copy(update={"allow_debug": True, "required_support": "USABLE"})
    debug = _token(_set("dbgstat", "enabled"))
    verify_confidential_space_token(debug, JWKS, loose, expected_nonce=NONCE)


def test_token_signed_by_unknown_key_is_refused() -> None:
    with pytest.raises(ConfidentialSpaceError, match=r"unknown key|signature"):
        verify_confidential_space_token(_token(key=_OTHER), JWKS, POLICY, expected_nonce=NONCE)


def test_binding_nonce_changes_with_key() -> None:
    other = hpke.encode_public_key(hpke.generate_private_key().public_key())
    assert binding_nonce("broker-nonce", other, "job-42") != NONCE
    with pytest.raises(ConfidentialSpaceError, match="nonce"):
        verify_confidential_space_token(
            _token(), JWKS, POLICY, expected_nonce=binding_nonce("broker-nonce", other, "job-42")
        )


@pytest.mark.parametrize(
    "fields",
    [
        {"audience": AUD, "allowed_image_digests": frozenset()},
        {"audience": "", "allowed_image_digests": frozenset({DIGEST})},
        {"audience": AUD, "allowed_image_digests": frozenset({DIGEST}), "unknown": 1},
        {"audience": AUD, "allowed_image_digests": frozenset({DIGEST}),
         "required_support": "EXPERIMENTAL"},
    ],
)
def test_policy_model_rejects_bad_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ConfidentialSpacePolicy(**fields)
