"""Identity administration: parties, users, tokens (admin only) and `whoami`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from veil import audit
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


@router.get("/admin/audit", response_model=schemas.AuditStatus,
            response_model_exclude_unset=True)
def audit_chain(caller: Admin, platform: PlatformDep) -> dict[str, Any]:
    """Whether the audit log still matches its hashes; a broken chain is an answer, not an error."""
    with platform.db.transaction() as session:
        try:
            return {"events": audit.verify_chain(session), "intact": True}
        except audit.AuditChainBroken as broken:
            return {"intact": False, "broken_at": broken.seq}
