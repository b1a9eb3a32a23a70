"""Request dependencies: the platform and the authenticated caller.

The concurrency model: every route that touches the database is a plain `def` (FastAPI runs
it in its thread pool) and opens its own `platform.db.transaction()`, committed before it
returns. There is deliberately no session dependency: a dependency's transaction would stay
open until FastAPI has also serialised the response in another pool thread, so with the pool
exhausted by requests waiting on SQLite's write lock, the holder of that lock would wait
for a thread forever. A route that must await (a form, a streamed body) does so with no
transaction open and then runs its DB work via `run_in_threadpool`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from veil.identity import Caller, Role, resolve
from veil.server.platform import Platform

_bearer = HTTPBearer(auto_error=False)


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


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
CallerDep = Annotated[Caller, Depends(get_caller)]
