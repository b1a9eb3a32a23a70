"""Parties, users and API tokens.

A token is `veil_` + 32 random bytes (URL-safe); only its SHA-256 is stored,
so a database leak does not leak credentials. Tokens are shown exactly once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil import audit
from veil.errors import VeilError
from veil.names import check_party, check_user
from veil.store.models import ApiToken, Party, User


class Role(StrEnum):
    PROVIDER = "provider"
    CONSUMER = "consumer"
    ADMIN = "admin"


class IdentityError(VeilError, ValueError):
    status_hint = 422


class NotFound(VeilError, LookupError):
    """Absent, or not visible to the caller: the two are deliberately indistinguishable."""

    status_hint = 404


class Forbidden(VeilError, PermissionError):
    status_hint = 403


class Conflict(VeilError, ValueError):
    status_hint = 409


@dataclass(frozen=True)
class Caller:
    """Who is asking: resolved from the bearer token on every request."""

    user_id: str
    user: str
    role: Role
    party_id: str | None
    party: str | None

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.user}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_party(session: Session, name: str, *, actor: str) -> Party:
    check_party(name)
    if session.execute(select(Party).where(Party.name == name)).scalar_one_or_none():
        raise IdentityError(f"party {name!r} already exists")
    party = Party(name=name)
    session.add(party)
    session.flush()
    audit.record(session, actor=actor, action="party.created", subject=party.id,
                 detail={"name": name})
    return party


def create_user(session: Session, name: str, *, role: Role, party: str | None,
                actor: str) -> tuple[User, str]:
    """Create a user and its first token; returns (user, token)."""
    check_user(name)
    if session.execute(select(User).where(User.name == name)).scalar_one_or_none():
        raise IdentityError(f"user {name!r} already exists")
    party_row = None
    if role is not Role.ADMIN:
        if party is None:
            raise IdentityError(f"a {role.value} belongs to a party")
        party_row = session.execute(select(Party).where(Party.name == party)).scalar_one_or_none()
        if party_row is None:
            raise IdentityError(f"no party named {party!r}")
    user = User(name=name, role=role.value, party_id=party_row.id if party_row else None)
    session.add(user)
    session.flush()
    audit.record(session, actor=actor, action="user.created", subject=user.id,
                 detail={"name": name, "role": role.value, "party": party})
    return user, issue_token(session, user, actor=actor)


def issue_token(session: Session, user: User, *, actor: str) -> str:
    token = "veil_" + secrets.token_urlsafe(32)
    session.add(ApiToken(token_hash=hash_token(token), user_id=user.id))
    session.flush()
    audit.record(session, actor=actor, action="token.issued", subject=user.id)
    return token


def resolve(session: Session, token: str) -> Caller | None:
    row = session.execute(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token),
                               ApiToken.revoked.is_(False))
    ).scalar_one_or_none()
    if row is None:
        return None
    user = row.user
    return Caller(user_id=user.id, user=user.name, role=Role(user.role), party_id=user.party_id,
                  party=user.party.name if user.party else None)


def has_admin(session: Session) -> bool:
    return session.execute(
        select(User.id).where(User.role == Role.ADMIN.value).limit(1)
    ).first() is not None
