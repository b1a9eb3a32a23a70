"""canonical JSON, JWT signing/verification, the signing key ring and HPKE sealing."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt as jrfc
from joserfc.jwk import OctKey

from veil.crypto import hpke
from veil.crypto.canonical import CanonicalJSONError, canonical_json, sha256_digest
from veil.crypto.jose import (
    ClaimError,
    JoseError,
    SignatureError,
    TokenExpiredError,
    TokenNotYetValidError,
    UnknownKeyError,
    sign_jwt,
    verify_jwt,
)
from veil.crypto.keys import KeyRingError, SigningKeyRing


def test_canonical_json_is_sorted_compact_utf8() -> None:
    expected = '{"a":["é",null,true],"b":1}'.encode()
    assert canonical_json({"b": 1, "a": ["é", None, True]}) == expected
    assert sha256_digest({}) == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"a": object()}, b"bytes"])
def test_canonical_json_refuses_values_without_a_json_form(bad: object) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json(bad)


def _claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"iss": "me", "iat": now, "exp": now + 60, **extra}


def test_ring_signs_and_jwks_verifies() -> None:
    ring = SigningKeyRing()
    token = ring.sign(_claims(x=1))
    assert verify_jwt(token, ring.jwks(), issuer="me")["x"] == 1
    assert all("d" not in k for k in ring.jwks()["keys"])  # no private parts published


def test_rotation_keeps_old_tokens_verifiable_until_retired() -> None:
    ring = SigningKeyRing(keep=2)
    old_kid = ring.current_kid
    old = ring.sign(_claims())
    ring.rotate()
    assert verify_jwt(old, ring.jwks())
    new = ring.sign(_claims())
    assert json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] != old_kid
    ring.retire(old_kid)
    with pytest.raises(UnknownKeyError):
        verify_jwt(old, ring.jwks())
    verify_jwt(new, ring.jwks())


def test_rotation_drops_keys_beyond_keep() -> None:
    ring = SigningKeyRing(keep=2)
    first = ring.sign(_claims())
    ring.rotate()
    ring.rotate()
    assert len(ring.jwks()["keys"]) == 2
    with pytest.raises(UnknownKeyError):
        verify_jwt(first, ring.jwks())


def test_ring_refuses_bad_operations(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError):
        SigningKeyRing(keep=1)
    ring = SigningKeyRing()
    with pytest.raises(KeyRingError):
        ring.retire(ring.current_kid)
    with pytest.raises(KeyRingError):
        ring.retire("nope")
    with pytest.raises(KeyRingError):
        SigningKeyRing.load(tmp_path)
    (tmp_path / "signing-keys.json").write_text("{not json")
    with pytest.raises(KeyRingError):
        SigningKeyRing.load(tmp_path)


def test_ring_save_load_roundtrip(tmp_path: Path) -> None:
    ring = SigningKeyRing()
    ring.rotate()
    ring.save(tmp_path)
    assert (tmp_path / "signing-keys.json").stat().st_mode & 0o777 == 0o600
    loaded = SigningKeyRing.load(tmp_path)
    assert loaded.jwks() == ring.jwks()
    verify_jwt(loaded.sign(_claims()), ring.jwks())


def test_expired_and_future_tokens_are_refused() -> None:
    ring = SigningKeyRing()
    now = int(time.time())
    expired = ring.sign({"iat": now - 1000, "exp": now - 100})
    with pytest.raises(TokenExpiredError):
        verify_jwt(expired, ring.jwks())
    future = ring.sign({"iat": now + 1000, "exp": now + 2000})
    with pytest.raises(TokenNotYetValidError):
        verify_jwt(future, ring.jwks())
    not_before = ring.sign({"iat": now, "nbf": now + 1000, "exp": now + 2000})
    with pytest.raises(TokenNotYetValidError):
        verify_jwt(not_before, ring.jwks())


def test_tampered_token_and_wrong_claims_are_refused() -> None:
    ring = SigningKeyRing()
    token = ring.sign(_claims(aud="kbs"))
    head, _body, sig = token.split(".")
    forged_body = base64.urlsafe_b64encode(json.dumps(_claims(aud="kbs", x=2)).encode())
    with pytest.raises(SignatureError):
        verify_jwt(f"{head}.{forged_body.decode().rstrip('=')}.{sig}", ring.jwks())
    with pytest.raises(ClaimError):
        verify_jwt(token, ring.jwks(), issuer="someone-else")
    with pytest.raises(ClaimError):
        verify_jwt(token, ring.jwks(), audience="other")
    assert verify_jwt(token, ring.jwks(), audience="kbs")["aud"] == "kbs"
    with pytest.raises(ClaimError):
        verify_jwt(ring.sign({"iat": int(time.time())}), ring.jwks())  # no exp
    with pytest.raises(SignatureError):
        verify_jwt("not-a-token", ring.jwks())


def test_symmetric_and_unlisted_algorithms_are_refused() -> None:
    ring = SigningKeyRing()
    kid = ring.current_kid
    hs = jrfc.encode({"alg": "HS256", "kid": kid}, _claims(), OctKey.import_key(b"k" * 32))
    with pytest.raises(JoseError):
        verify_jwt(hs, ring.jwks())
    with pytest.raises(JoseError):
        verify_jwt(ring.sign(_claims()), ring.jwks(), algorithms=("HS256",))
    with pytest.raises(JoseError):
        sign_jwt(_claims(), ec.generate_private_key(ec.SECP256R1()), "k", alg="none")


def test_rs256_tokens_verify_when_allowed() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from joserfc.jwk import RSAKey

    jwks = {"keys": [RSAKey.import_key(key.public_key(), {"kid": "g1"}).as_dict()]}
    token = sign_jwt(_claims(), key, "g1", alg="RS256")
    assert verify_jwt(token, jwks, algorithms=("RS256",))["iss"] == "me"
    with pytest.raises(SignatureError):
        verify_jwt(token, jwks, algorithms=("ES256",))


def test_token_without_kid_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    from joserfc.jwk import ECKey

    jkey = ECKey.import_key(key, {"kid": "a"})
    token = jrfc.encode({"alg": "ES256"}, _claims(), jkey)
    with pytest.raises(UnknownKeyError):
        verify_jwt(token, {"keys": [jkey.as_dict(private=False)]})


def test_hpke_roundtrip_and_context_binding() -> None:
    key = hpke.generate_private_key()
    pub = hpke.decode_public_key(hpke.encode_public_key(key.public_key()))
    sealed = hpke.seal(pub, b"secret-data-key", b"ctx-1")
    assert hpke.open_sealed(key, sealed, b"ctx-1") == b"secret-data-key"
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(key, sealed, b"ctx-2")
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(hpke.generate_private_key(), sealed, b"ctx-1")
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(key, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"ctx-1")


@pytest.mark.parametrize("text", ["", "AAAA", "!!notbase64!!", "A" * 60])
def test_hpke_refuses_malformed_public_keys(text: str) -> None:
    with pytest.raises(hpke.HpkeError):
        hpke.decode_public_key(text)


def test_hpke_refuses_empty_info() -> None:
    with pytest.raises(hpke.HpkeError):
        hpke.seal(hpke.generate_private_key().public_key(), b"k", b"")
