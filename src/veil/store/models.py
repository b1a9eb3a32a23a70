"""The relational model: identities, datasets, jobs, outputs, audit.

Portable types only (no SQLite-only features) so the same models run on
PostgreSQL. Ids are random hex strings so they can be minted before insert.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from veil.store.db import Base


def new_id() -> str:
    return secrets.token_hex(16)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Party(Base):
    """An organisation: a provider of data, a consumer of results, or both."""

    __tablename__ = "parties"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    party_id: Mapped[str | None] = mapped_column(ForeignKey("parties.id"))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    party: Mapped[Party | None] = relationship()


class ApiToken(Base):
    """Only the SHA-256 of a token is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    user: Mapped[User] = relationship()


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("party_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    party_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    schema: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes_in: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    content_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # SHA-256 of the ciphertext as stored: what the launcher measures as the job's input.
    stored_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The background view build (``veil.catalog.build``): phase, progress, attempts, reason.
    build: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Which view builder holds the build and when it last showed life (conditional claims).
    build_worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    build_heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                             nullable=True)
    party: Mapped[Party] = relationship()
    views: Mapped[list[DatasetView]] = relationship(back_populates="dataset")

    @property
    def full_name(self) -> str:
        return f"{self.party.name}/{self.name}"


class DatasetView(Base):
    __tablename__ = "dataset_views"
    __table_args__ = (UniqueConstraint("dataset_id", "kind"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    kind: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset: Mapped[Dataset] = relationship(back_populates="views")


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    party_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    state: Mapped[str] = mapped_column(String(24), index=True)
    digest: Mapped[str] = mapped_column(String(80))
    entrypoint: Mapped[str] = mapped_column(String(255))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    backend: Mapped[str] = mapped_column(String(32), default="local-sandbox")
    insecure: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The final attestation result (a JWT over the output manifest) and that manifest.
    attestation_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    inputs: Mapped[list[JobInput]] = relationship(back_populates="job",
                                                  order_by="JobInput.position")
    transitions: Mapped[list[JobTransition]] = relationship(order_by="JobTransition.at")
    approvals: Mapped[list[Approval]] = relationship()
    outputs: Mapped[list[Output]] = relationship(order_by="Output.name")


class JobInput(Base):
    __tablename__ = "job_inputs"
    __table_args__ = (UniqueConstraint("job_id", "dataset_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    position: Mapped[int] = mapped_column(Integer)
    job: Mapped[Job] = relationship(back_populates="inputs")
    dataset: Mapped[Dataset] = relationship()


class JobTransition(Base):
    __tablename__ = "job_transitions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(24), nullable=True)
    to_state: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Approval(Base):
    """One provider's decision on one job digest."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("job_id", "party_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    party_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    digest: Mapped[str] = mapped_column(String(80))
    decision: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    party: Mapped[Party] = relationship()


class Output(Base):
    __tablename__ = "outputs"
    __table_args__ = (UniqueConstraint("job_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    media_type: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reviews: Mapped[list[OutputReview]] = relationship()


class OutputReview(Base):
    __tablename__ = "output_reviews"
    __table_args__ = (UniqueConstraint("output_id", "party_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    output_id: Mapped[str] = mapped_column(ForeignKey("outputs.id"))
    party_id: Mapped[str] = mapped_column(ForeignKey("parties.id"))
    decision: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BudgetCharge(Base):
    """A DP spend against one dataset for one consumer party (the ledger)."""

    __tablename__ = "budget_charges"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    party_id: Mapped[str] = mapped_column(ForeignKey("parties.id"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    output_name: Mapped[str] = mapped_column(String(128))
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    rho: Mapped[float | None] = mapped_column(Float, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """One link of the hash chain; see veil.audit."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(80))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class ConsoleSession(Base):
    """A web-console sign-in: only the SHA-256 of the cookie is stored, as for tokens.

    Bound to the API token it was exchanged for, so revoking that token ends the session.
    """

    __tablename__ = "console_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    token: Mapped[ApiToken] = relationship()
