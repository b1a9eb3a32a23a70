"""Identity administration: parties, users, tokens (admin only) and `whoami`.

The web console's admin page calls the same identity functions as these routes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from veil import audit, identity
from veil.identity import Caller, Role, create_party, create_user
from veil.server import schemas
from veil.server.deps import CallerDep, PlatformDep, require

router = APIRouter()
Admin = Annotated[Caller, require(Role.ADMIN)]


class PartyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: Role
    party: str | None = None


@router.get("/me", response_model=schemas.Me)
def me(caller: CallerDep) -> dict[str, Any]:
    return {"user": caller.user, "role": caller.role.value, "party": caller.party}


@router.post("/admin/parties", status_code=201, response_model=schemas.PartyCreated)
def new_party(body: PartyIn, caller: Admin, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        party = create_party(session, body.name, actor=caller.actor)
        return {"id": party.id, "name": party.name}


@router.post("/admin/users", status_code=201, response_model=schemas.UserCreated)
def new_user(body: UserIn, caller: Admin, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        user, token = create_user(session, body.name, role=body.role, party=body.party,
                                  actor=caller.actor)
        return {"id": user.id, "name": user.name, "role": user.role, "party": body.party,
                "token": token}


class TokenFor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str


def party_info(party: Any) -> dict[str, Any]:
    return {"id": party.id, "name": party.name, "created_at": party.created_at.isoformat()}


def user_info(user: Any) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "role": user.role,
            "party": user.party.name if user.party else None,
            "created_at": user.created_at.isoformat()}


def token_info(token: Any) -> dict[str, Any]:
    return {"id": token.id, "user": token.user.name, "role": token.user.role,
            "created_at": token.created_at.isoformat(), "revoked": token.revoked}


@router.get("/admin/parties", response_model=list[schemas.PartyInfo])
def parties(caller: Admin, platform: PlatformDep) -> list[dict[str, Any]]:
    with platform.db.transaction() as session:
        return [party_info(p) for p in identity.list_parties(session)]


@router.get("/admin/users", response_model=list[schemas.UserInfo])
def users(caller: Admin, platform: PlatformDep) -> list[dict[str, Any]]:
    with platform.db.transaction() as session:
        return [user_info(u) for u in identity.list_users(session)]


@router.get("/admin/tokens", response_model=list[schemas.TokenInfo])
def tokens(caller: Admin, platform: PlatformDep) -> list[dict[str, Any]]:
    with platform.db.transaction() as session:
        return [token_info(t) for t in identity.list_tokens(session)]


@router.post("/admin/tokens", status_code=201, response_model=schemas.TokenIssued)
def new_token(body: TokenFor, caller: Admin, platform: PlatformDep) -> dict[str, Any]:
    """A further token for an existing user (the old ones stay valid until revoked)."""
    with platform.db.transaction() as session:
        user = identity.user_by_name(session, body.user)
        row, token = identity.new_token(session, user, actor=caller.actor)
        return {"id": row.id, "user": user.name, "token": token}


@router.post("/admin/tokens/{token_id}/revoke", response_model=schemas.TokenInfo)
def revoke(token_id: str, caller: Admin, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        return token_info(identity.revoke_token(session, token_id, actor=caller.actor))


@router.post("/admin/tokens/{token_id}/rotate", status_code=201,
             response_model=schemas.TokenIssued)
def rotate(token_id: str, caller: Admin, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        old, token = identity.rotate_token(session, token_id, actor=caller.actor)
        return {"id": old.id, "user": old.user.name, "token": token}


@router.get("/admin/audit", response_model=schemas.AuditStatus,
            response_model_exclude_unset=True)
def audit_chain(caller: Admin, platform: PlatformDep) -> dict[str, Any]:
    """Whether the audit log still matches its hashes; a broken chain is an answer, not an error."""
    with platform.db.transaction() as session:
        try:
            return {"events": audit.verify_chain(session), "intact": True}
        except audit.AuditChainBroken as broken:
            return {"intact": False, "broken_at": broken.seq}
