"""Console sign-in: an API token exchanged for a session cookie, and CSRF checks.

The cookie holds a random session secret (only its hash is stored, see
`veil.identity.open_session`); it is HttpOnly, SameSite=Strict, Secure when the request came
over TLS, and scoped to the whole site. Every form carries the session's CSRF token; the
sign-in form, which has no session yet, carries a double-submit token bound to a short-lived
pre-session cookie.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response

from veil import identity
from veil.identity import Caller, Forbidden, Role
from veil.server.deps import PlatformDep

SESSION_COOKIE = "veil_session"
SIGNIN_COOKIE = "veil_signin"
SIGNIN_PATH = "/signin"


class CsrfRejected(Forbidden):
    """A console form came without the session's CSRF token, or with a wrong one."""


@dataclass(frozen=True)
class Signed:
    """The signed-in caller of a console page and the CSRF token its forms must carry."""

    caller: Caller
    csrf: str
    secret: str


def set_cookie(request: Request, response: Response, name: str, value: str, *,
               max_age: int, path: str = "/") -> None:
    response.set_cookie(name, value, max_age=max_age, path=path, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def signed_in(request: Request, platform: PlatformDep) -> Signed:
    """The page's caller; anyone else is sent to the sign-in page."""
    secret = request.cookies.get(SESSION_COOKIE)
    found = None
    if secret:
        with platform.db.transaction() as session:
            found = identity.resolve_session(session, secret)
    if found is None:
        raise HTTPException(303, "sign in first", headers={"Location": SIGNIN_PATH})
    caller, csrf = found
    return Signed(caller, csrf, secret or "")


SignedDep = Annotated[Signed, Depends(signed_in)]


def role(*roles: Role) -> object:
    """Dependency: a signed-in caller holding one of `roles` (others get 403, not the page)."""

    def check(signed: SignedDep) -> Signed:
        if signed.caller.role not in roles:
            raise Forbidden(f"this page is for the role {' or '.join(r.value for r in roles)}")
        return signed

    return Depends(check)


def check_csrf(signed: Signed, token: str) -> None:
    if not token or not secrets.compare_digest(token.encode(), signed.csrf.encode()):
        raise CsrfRejected("the form's CSRF token is missing or wrong; reload the page")


ProviderPage = Annotated[Signed, role(Role.PROVIDER)]
ConsumerPage = Annotated[Signed, role(Role.CONSUMER)]
AdminPage = Annotated[Signed, role(Role.ADMIN)]
