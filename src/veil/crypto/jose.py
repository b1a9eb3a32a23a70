"""Signed JWTs for attestation results and upstream verifier tokens, thin over joserfc.

Only asymmetric algorithms are accepted, every token must name its key (``kid``) and the
time claims are checked here, with one explicit leeway, so no caller forgets them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Collection, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError
from joserfc.errors import JoseError as _JoserfcError
from joserfc.jwk import ECKey, KeyParameters, KeySet, RSAKey

__all__ = [
    "ALLOWED_ALGORITHMS",
    "ClaimError",
    "JoseError",
    "SignatureError",
    "TokenExpiredError",
    "TokenNotYetValidError",
    "UnknownKeyError",
    "sign_jwt",
    "verify_jwt",
]

ALLOWED_ALGORITHMS = frozenset({"ES256", "ES384", "RS256", "PS256", "PS384"})
_MAX_TOKEN_BYTES = 64 * 1024


class JoseError(Exception):
    """Base class: a token could not be produced or was refused."""


class SignatureError(JoseError):
    """The token is malformed or its signature does not verify."""


class UnknownKeyError(JoseError):
    """The token names a key that is not in the trusted key set."""


class TokenExpiredError(JoseError):
    """``exp`` has passed."""


class TokenNotYetValidError(JoseError):
    """``iat``/``nbf`` lie in the future beyond the leeway."""


class ClaimError(JoseError):
    """A required claim is missing or has the wrong value."""


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def sign_jwt(claims: Mapping[str, Any], key: PrivateKey, kid: str, alg: str = "ES256") -> str:
    """Sign ``claims`` as a compact JWS with header ``{alg, kid, typ: JWT}``."""
    if alg not in ALLOWED_ALGORITHMS:
        raise JoseError(f"algorithm {alg!r} is not allowed")
    params: KeyParameters = {"kid": kid, "use": "sig", "alg": alg}
    jkey: ECKey | RSAKey
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jkey = ECKey.import_key(key, params)
    elif isinstance(key, rsa.RSAPrivateKey):
        jkey = RSAKey.import_key(key, params)
    else:
        raise JoseError("signing key must be an EC or RSA private key")
    try:
        return jwt.encode({"alg": alg, "kid": kid, "typ": "JWT"}, dict(claims), jkey)
    except _JoserfcError as exc:
        raise JoseError(f"cannot sign token: {exc.error}") from None


def _num_claim(claims: Mapping[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimError(f"claim {name!r} must be a number")
    return int(value)


def verify_jwt(
    token: str | bytes,
    jwks: Mapping[str, Any],
    *,
    algorithms: Collection[str] = ("ES256",),
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
    leeway_s: int = 30,
    require: Collection[str] = ("iat", "exp"),
) -> dict[str, Any]:
    """Verify signature and time claims of ``token`` against ``jwks``; return its claims."""
    bad = set(algorithms) - ALLOWED_ALGORITHMS
    if bad or not algorithms:
        raise JoseError(f"algorithms not allowed: {sorted(bad) or 'none given'}")
    raw = token.encode() if isinstance(token, str) else token
    if len(raw) > _MAX_TOKEN_BYTES:
        raise SignatureError("token is too large")
    header = _header(raw)
    if not isinstance(header.get("kid"), str):
        raise UnknownKeyError("token header names no key id (kid)")
    try:
        keyset = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (_JoserfcError, ValueError, TypeError, KeyError) as exc:
        raise JoseError(f"trusted key set is malformed: {exc}") from None
    try:
        decoded = jwt.decode(raw, keyset, algorithms=list(algorithms))
    except InvalidKeyIdError:
        raise UnknownKeyError(f"token signed by unknown key {header['kid']!r}") from None
    except BadSignatureError:
        raise SignatureError("token signature does not verify") from None
    except (_JoserfcError, ValueError, TypeError) as exc:
        raise SignatureError(f"token rejected: {exc}") from None
    claims = dict(decoded.claims)
    for name in require:
        if name not in claims:
            raise ClaimError(f"token lacks required claim {name!r}")
    t = time.time() if now is None else now
    exp = _num_claim(claims, "exp")
    if exp is not None and t > exp + leeway_s:
        raise TokenExpiredError("token has expired")
    for name in ("iat", "nbf"):
        value = _num_claim(claims, name)
        if value is not None and value > t + leeway_s:
            raise TokenNotYetValidError(f"token {name} lies in the future")
    if issuer is not None and claims.get("iss") != issuer:
        raise ClaimError("token issuer is not the trusted issuer")
    if audience is not None:
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if audience not in auds:
            raise ClaimError("token audience does not match")
    return claims


def _header(raw: bytes) -> dict[str, Any]:
    try:
        head = raw.split(b".")[0]
        data = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
    except Exception:
        raise SignatureError("token is not a compact JWS") from None
    if not isinstance(data, dict):
        raise SignatureError("token header is not a JSON object")
    return data
