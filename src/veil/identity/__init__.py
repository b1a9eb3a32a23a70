"""Parties, users, API tokens and web-console sessions.

A token is `veil_` + 32 random bytes (URL-safe); only its SHA-256 is stored,
so a database leak does not leak credentials. Tokens are shown exactly once.
A console session is a second secret exchanged for a token (stored hashed too) and
bound to it: revoking the token ends every session made from it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil import audit
from veil.errors import VeilError
from veil.names import check_party, check_user
from veil.store.models import ApiToken, ConsoleSession, Party, User, utcnow


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
    return new_token(session, user, actor=actor)[1]


def new_token(session: Session, user: User, *, actor: str) -> tuple[ApiToken, str]:
    """A fresh token for `user`: (its record, the token, shown once)."""
    token = "veil_" + secrets.token_urlsafe(32)
    row = ApiToken(token_hash=hash_token(token), user_id=user.id)
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action="token.issued", subject=user.id,
                 detail={"token_id": row.id})
    return row, token


def resolve(session: Session, token: str) -> Caller | None:
    row = session.execute(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token),
                               ApiToken.revoked.is_(False))
    ).scalar_one_or_none()
    if row is None:
        return None
    return caller_of(row.user)


def caller_of(user: User) -> Caller:
    return Caller(user_id=user.id, user=user.name, role=Role(user.role), party_id=user.party_id,
                  party=user.party.name if user.party else None)


def list_parties(session: Session) -> Sequence[Party]:
    return session.execute(select(Party).order_by(Party.name)).scalars().all()


def list_users(session: Session) -> Sequence[User]:
    return session.execute(select(User).order_by(User.name)).scalars().all()


def list_tokens(session: Session) -> Sequence[ApiToken]:
    """Every token's record (never the token: only its hash was ever stored)."""
    return session.execute(select(ApiToken).order_by(ApiToken.created_at)).scalars().all()


def revoke_token(session: Session, token_id: str, *, actor: str) -> ApiToken:
    """Revoke one token; its console sessions end with it (they resolve through it)."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound("no such token")
    if row.revoked:
        raise Conflict("this token is already revoked")
    row.revoked = True
    session.flush()
    audit.record(session, actor=actor, action="token.revoked", subject=row.user_id,
                 detail={"token_id": row.id})
    return row


def rotate_token(session: Session, token_id: str, *, actor: str) -> tuple[ApiToken, str]:
    """Revoke a token and issue its user a fresh one, in one transaction."""
    old = revoke_token(session, token_id, actor=actor)
    return old, issue_token(session, old.user, actor=actor)


def user_by_name(session: Session, name: str) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def recover_admin(session: Session, name: str, *, actor: str) -> str:
    """A new token for an admin who lost theirs (run on the server's host, not over HTTP)."""
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None or user.role != Role.ADMIN.value:
        raise IdentityError(f"no admin named {name!r}")
    return issue_token(session, user, actor=actor)


SESSION_TTL = timedelta(hours=12)


def open_session(session: Session, token: str, *,
                 ttl: timedelta = SESSION_TTL) -> tuple[str, str, Caller] | None:
    """Exchange an API token for a console session: (cookie secret, CSRF token, caller)."""
    row = session.execute(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token),
                               ApiToken.revoked.is_(False))
    ).scalar_one_or_none()
    if row is None:
        return None
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(ConsoleSession(session_hash=hash_token(secret), token_id=row.id, csrf=csrf,
                               expires_at=utcnow() + ttl))
    session.flush()
    caller = caller_of(row.user)
    audit.record(session, actor=caller.actor, action="console.signed_in", subject=row.user_id)
    return secret, csrf, caller


def resolve_session(session: Session, secret: str) -> tuple[Caller, str] | None:
    """(caller, CSRF token) of a live session whose token is not revoked, else None."""
    row = session.execute(
        select(ConsoleSession).where(ConsoleSession.session_hash == hash_token(secret))
    ).scalar_one_or_none()
    if row is None or row.token.revoked or _aware(row.expires_at) <= utcnow():
        return None
    return caller_of(row.token.user), row.csrf


def close_session(session: Session, secret: str) -> None:
    row = session.execute(
        select(ConsoleSession).where(ConsoleSession.session_hash == hash_token(secret))
    ).scalar_one_or_none()
    if row is not None:
        session.delete(row)


def _aware(at: datetime) -> datetime:
    """SQLite hands datetimes back naive (UTC), PostgreSQL aware."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def has_admin(session: Session) -> bool:
    return session.execute(
        select(User.id).where(User.role == Role.ADMIN.value).limit(1)
    ).first() is not None
