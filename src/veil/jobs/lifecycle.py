"""The job lifecycle: every allowed transition is listed here, and only here.

    submitted -> pending_approval -> approved -> running -> output_review -> released
    plus rejected / failed / cancelled.

`transition` is the only code that changes `Job.state`; it records the
transition row and the audit event in the caller's transaction, so state and
history can never disagree.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.orm import Session

from veil import audit
from veil.errors import VeilError
from veil.store.models import Job, JobTransition, utcnow


class State(StrEnum):
    SUBMITTED = "submitted"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    RUNNING = "running"
    OUTPUT_REVIEW = "output_review"
    RELEASED = "released"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"


ALLOWED: dict[State, frozenset[State]] = {
    State.SUBMITTED: frozenset({State.PENDING_APPROVAL, State.REJECTED, State.CANCELLED}),
    State.PENDING_APPROVAL: frozenset({State.APPROVED, State.REJECTED, State.CANCELLED}),
    # approved -> rejected: an approval revoked before the run started.
    State.APPROVED: frozenset({State.RUNNING, State.REJECTED, State.CANCELLED, State.FAILED}),
    # running -> approved: a worker died mid-run and the job is queued again.
    State.RUNNING: frozenset({State.OUTPUT_REVIEW, State.FAILED, State.APPROVED}),
    State.OUTPUT_REVIEW: frozenset({State.RELEASED}),
    State.RELEASED: frozenset(),
    State.REJECTED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}
FINAL = frozenset(s for s, targets in ALLOWED.items() if not targets)


class IllegalTransition(VeilError):
    status_hint = 409


class StaleState(VeilError):
    """Another actor changed the job first (e.g. two workers claiming one job)."""

    status_hint = 409


def transition(session: Session, job: Job, to: State, *, actor: str,
               reason: str | None = None, **fields: object) -> None:
    """Move `job` to `to`, atomically against concurrent writers.

    The UPDATE is conditional on the state we read, so two workers (or a
    worker and a cancelling consumer) can never both win.
    """
    current = State(job.state)
    if to not in ALLOWED[current]:
        raise IllegalTransition(f"job {job.id}: {current} -> {to} is not allowed")
    now = utcnow()
    values: dict[str, object] = {"state": to.value, "updated_at": now, **fields}
    if reason is not None:
        values["reason"] = reason
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.state == current.value).values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleState(f"job {job.id} is no longer {current}")
    for key, value in values.items():
        setattr(job, key, value)
    session.add(JobTransition(job_id=job.id, from_state=current.value, to_state=to.value,
                              actor=actor, reason=reason, at=now))
    audit.record(session, actor=actor, action=f"job.{to.value}", subject=job.id,
                 detail={"from": current.value, "reason": reason, "digest": job.digest})


def create(session: Session, job: Job, *, actor: str) -> None:
    """Persist a new job in `submitted`, with its first history row."""
    job.state = State.SUBMITTED.value
    session.add(job)
    session.flush()
    session.add(JobTransition(job_id=job.id, from_state=None, to_state=State.SUBMITTED.value,
                              actor=actor, at=job.created_at))
    audit.record(session, actor=actor, action="job.submitted", subject=job.id,
                 detail={"digest": job.digest})
