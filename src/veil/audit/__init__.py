"""A hash-chained audit log: every event commits to the one before it.

Events are appended inside the caller's transaction, so a state change and its
audit record land together or not at all. `verify_chain` recomputes every link;
editing or deleting a past row breaks it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from veil.errors import VeilError
from veil.store.models import AuditEvent, utcnow

GENESIS = "0" * 64


class AuditChainBroken(VeilError):
    """A stored event does not match its hash or its predecessor's; `seq` is the first such."""

    status_hint = 409

    def __init__(self, seq: int) -> None:
        self.seq = seq
        super().__init__(f"audit chain broken at event {seq}")


def _timestamp(at: datetime) -> str:
    """UTC, without tzinfo: SQLite hands datetimes back naive, PostgreSQL aware."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def _link_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str,
               subject: str, detail: dict[str, Any]) -> str:
    body = json.dumps(
        {"seq": seq, "at": _timestamp(at), "actor": actor, "action": action,
         "subject": subject, "detail": detail},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(prev_hash.encode() + body.encode()).hexdigest()


def record(session: Session, *, actor: str, action: str, subject: str,
           detail: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event. Detail must never contain secrets or data values."""
    if session.get_bind().dialect.name == "postgresql":
        # Serialise appenders for the rest of this transaction (SQLite does so at BEGIN).
        session.execute(text("SELECT pg_advisory_xact_lock(7461)"))
    last = session.execute(
        select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)
    ).scalar_one_or_none()
    seq = 1 if last is None else last.seq + 1
    prev = GENESIS if last is None else last.hash
    at = utcnow()
    detail = json.loads(json.dumps(detail or {}, default=str))
    event = AuditEvent(seq=seq, at=at, actor=actor, action=action, subject=subject,
                       detail=detail, prev_hash=prev,
                       hash=_link_hash(prev, seq, at, actor, action, subject, detail))
    session.add(event)
    session.flush()
    return event


def verify_chain(session: Session) -> int:
    """Recompute every link; returns the number of events or raises AuditChainBroken."""
    prev = GENESIS
    count = 0
    for event in session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars():
        expected = _link_hash(prev, event.seq, event.at, event.actor, event.action, event.subject,
                              event.detail)
        if event.prev_hash != prev or event.hash != expected:
            raise AuditChainBroken(event.seq)
        prev = event.hash
        count += 1
    return count


__all__ = ["AuditChainBroken", "record", "verify_chain"]
