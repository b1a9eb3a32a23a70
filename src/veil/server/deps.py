"""Request dependencies: the platform, a DB transaction and the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from veil.identity import Caller, Role, resolve
from veil.server.platform import Platform

_bearer = HTTPBearer(auto_error=False)


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def get_session(platform: Annotated[Platform, Depends(get_platform)]) -> Iterator[Session]:
    """One transaction per request: committed if the route returns, rolled back if it raises."""
    with platform.db.transaction() as session:
        yield session


def get_caller(
    platform: Annotated[Platform, Depends(get_platform)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    with platform.db.transaction() as session:
        caller = resolve(session, credentials.credentials)
    if caller is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return caller


def require(*roles: Role) -> object:
    """Dependency: the caller must hold one of `roles`."""

    def check(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if caller.role not in roles:
            raise HTTPException(403, f"this needs the role {' or '.join(r.value for r in roles)}")
        return caller

    return Depends(check)


PlatformDep = Annotated[Platform, Depends(get_platform)]
# scope="function": commit before the response is sent, so a 2xx means it is durable.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
CallerDep = Annotated[Caller, Depends(get_caller)]
