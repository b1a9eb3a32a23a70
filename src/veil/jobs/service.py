"""Submitting, approving, rejecting and cancelling jobs; who may see which job.

Every function takes the caller and decides authorisation itself, so the HTTP
routes, the CLI and tests all go through the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil import audit
from veil.catalog.service import Catalog, policy_of
from veil.errors import VeilError
from veil.identity import Caller, Conflict, Forbidden, NotFound, Role
from veil.jobs.bundle import Bundle, BundleError, make_bundle
from veil.jobs.lifecycle import State, create, transition
from veil.names import bundle_blob_key
from veil.store.models import Approval, Dataset, Job, JobInput, Output, Party


class JobError(VeilError, ValueError):
    status_hint = 422


def admit(session: Session, catalog: Catalog, caller: Caller, files: Mapping[str, bytes], *,
          entrypoint: str, inputs: Sequence[str], outputs: Sequence[str], backend: str,
          max_bundle_bytes: int, doing: str = "submit jobs") -> tuple[Bundle, list[Dataset]]:
    """The checks a bundle passes before it may run anywhere (``submit`` and the pre-flight
    share them): a consumer, the size, a well-formed bundle and pinned plans, inputs the
    caller may use, a backend every input's policy allows."""
    if caller.role is not Role.CONSUMER or caller.party_id is None:
        raise Forbidden(f"only consumers {doing}")
    if sum(len(v) for v in files.values()) > max_bundle_bytes:
        raise BundleError(f"bundle exceeds {max_bundle_bytes} bytes")
    bundle = make_bundle(files, entrypoint=entrypoint, inputs=inputs, outputs=outputs)
    _check_pinned_plans(bundle)
    datasets: list[Dataset] = []
    for name in bundle.inputs:
        dataset = catalog.lookup(session, name)
        # One message for "absent" and "not yours": existence is not disclosed.
        if dataset is None or not catalog.may_use(caller, dataset):
            raise Forbidden(f"you may not use dataset {name!r}")
        if backend not in policy_of(dataset).allowed_backends:
            raise Forbidden(f"dataset {name!r} does not allow the {backend!r} backend")
        datasets.append(dataset)
    return bundle, datasets


def submit(session: Session, catalog: Catalog, caller: Caller, files: Mapping[str, bytes], *,
           entrypoint: str, inputs: Sequence[str], outputs: Sequence[str] = (),
           backend: str, insecure: bool = False,
           max_bundle_bytes: int = 16 * 1024**2) -> Job:
    bundle, datasets = admit(session, catalog, caller, files, entrypoint=entrypoint,
                             inputs=inputs, outputs=outputs, backend=backend,
                             max_bundle_bytes=max_bundle_bytes)
    job = Job(owner_id=caller.user_id, party_id=caller.party_id, digest=bundle.digest,
              entrypoint=bundle.entrypoint, manifest=bundle.describe(), backend=backend,
              insecure=insecure)
    create(session, job, actor=caller.actor)
    for position, dataset in enumerate(datasets):
        session.add(JobInput(job_id=job.id, dataset_id=dataset.id, position=position))
    for name, data in bundle.files.items():
        catalog.blobs.put(bundle_blob_key(job.id, name), data)
    session.flush()
    transition(session, job, State.PENDING_APPROVAL, actor="system:policy")
    for dataset in datasets:
        if policy_of(dataset).approval.approves(job.digest, caller.party):
            _decide(session, job, dataset.party_id, "approve", actor="policy:auto")
    _maybe_approve(session, job)
    return job


def _check_pinned_plans(bundle: Bundle) -> None:
    """Plans pinned in the bundle must parse, and name declared outputs over declared inputs."""
    from veil.privacy.plans import PINNED_PLANS_FILE, PlanError, parse_pinned

    raw = bundle.files.get(PINNED_PLANS_FILE)
    if raw is None:
        return
    try:
        plans = parse_pinned(raw)
    except PlanError as exc:
        raise BundleError(f"{PINNED_PLANS_FILE}: {exc}") from None
    for name, doc in plans.items():
        if name not in bundle.outputs:
            raise BundleError(f"{PINNED_PLANS_FILE} pins {name!r}, which is not a declared "
                              "output of the job")
        outside = [s for s in doc.query.relation.sources if s not in bundle.inputs]
        if outside:
            raise BundleError(f"the plan of {name!r} reads {outside[0]!r}, which is not an "
                              "input of the job")


def delete_dataset(session: Session, catalog: Catalog, caller: Caller,
                   dataset_id: str) -> tuple[Dataset, list[str]]:
    """A provider deletes a dataset: jobs waiting to read it are rejected, then the catalog
    forgets its key and views. Refused while a job reading it runs (it holds the key).

    Returns the dataset and the ids of the jobs rejected; the caller discards the blobs
    after the transaction commits.
    """
    dataset = catalog.own_dataset(session, caller, dataset_id, lock=True)
    readers = session.execute(
        select(Job).join(JobInput).where(JobInput.dataset_id == dataset.id)
    ).scalars().all()
    if any(State(job.state) is State.RUNNING for job in readers):
        raise Conflict("a job reading this dataset is running; delete it once the job ends")
    withdrawn = []
    for job in readers:
        if State(job.state) in (State.PENDING_APPROVAL, State.APPROVED):
            transition(session, job, State.REJECTED, actor=caller.actor,
                       reason=f"input {dataset.full_name} was deleted by its provider")
            withdrawn.append(job.id)
    return catalog.delete(session, caller, dataset_id), withdrawn


def auto_approve_rule(session: Session, catalog: Catalog, caller: Caller,
                      job_id: str) -> tuple[str, str, list[str]]:
    """"Approve once, run many": the caller's datasets that this job reads approve its digest
    automatically for the submitting consumer party from now on (their policies' rules).

    Returns (digest, consumer party, dataset names). Audited as a policy update per dataset;
    later matching submissions are audited as approved by ``policy:auto``.
    """
    job = _provider_job(session, caller, job_id)
    consumer = session.get(Party, job.party_id)
    assert consumer is not None
    mine = [i.dataset for i in job.inputs if i.dataset.party_id == caller.party_id]
    for dataset in mine:
        catalog.add_auto_rule(session, caller, dataset.id, job.digest, consumer.name)
    return job.digest, consumer.name, [d.full_name for d in mine]


def earlier_approved_version(session: Session, caller: Caller, job: Job) -> Job | None:
    """The latest earlier job of the same submitter and entrypoint that the caller's party
    approved: what a reviewer diffs the new code against."""
    earlier = session.execute(
        select(Job).join(Approval).where(
            Job.owner_id == job.owner_id, Job.entrypoint == job.entrypoint,
            Job.created_at < job.created_at, Job.id != job.id,
            Approval.party_id == caller.party_id, Approval.decision == "approve",
            Approval.digest == Job.digest)
        .order_by(Job.created_at.desc()).limit(1)
    ).scalar_one_or_none()
    return earlier


def load_bundle(catalog: Catalog, job: Job) -> Bundle:
    manifest = job.manifest
    files = {entry["path"]: catalog.blobs.get(bundle_blob_key(job.id, entry["path"]))
             for entry in manifest["files"]}
    return Bundle(files, manifest["entrypoint"], tuple(manifest["inputs"]),
                  tuple(manifest["outputs"]), manifest["runtime"])


def providers_of(job: Job) -> set[str]:
    return {inp.dataset.party_id for inp in job.inputs}


def can_see(caller: Caller, job: Job) -> bool:
    if caller.role is Role.ADMIN:
        return True
    if caller.role is Role.CONSUMER:
        return job.owner_id == caller.user_id
    return caller.party_id in providers_of(job)


def get(session: Session, caller: Caller, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or not can_see(caller, job):
        raise NotFound("no such job visible to you")
    return job


def visible(session: Session, caller: Caller) -> list[Job]:
    jobs = session.execute(select(Job).order_by(Job.created_at)).scalars().all()
    return [job for job in jobs if can_see(caller, job)]


def approve(session: Session, caller: Caller, job_id: str, digest: str) -> Job:
    job = _provider_job(session, caller, job_id)
    if State(job.state) is not State.PENDING_APPROVAL:
        raise JobError(f"job is {job.state}, not pending approval")
    if digest != job.digest:
        raise JobError("the digest you approved is not this job's digest")
    assert caller.party_id is not None
    _decide(session, job, caller.party_id, "approve", actor=caller.actor)
    _maybe_approve(session, job)
    return job


def reject(session: Session, caller: Caller, job_id: str, reason: str | None) -> Job:
    """Reject a pending job, or revoke an approval before the run starts."""
    job = _provider_job(session, caller, job_id)
    if State(job.state) not in (State.PENDING_APPROVAL, State.APPROVED):
        raise JobError(f"job is {job.state}; it can no longer be rejected")
    assert caller.party_id is not None
    _decide(session, job, caller.party_id, "reject", actor=caller.actor)
    transition(session, job, State.REJECTED, actor=caller.actor,
               reason=reason or f"rejected by {caller.party}")
    return job


def cancel(session: Session, caller: Caller, job_id: str) -> Job:
    job = get(session, caller, job_id)
    if caller.role is not Role.CONSUMER:
        raise Forbidden("only the submitting consumer cancels a job")
    transition(session, job, State.CANCELLED, actor=caller.actor, reason="cancelled by consumer")
    return job


def _provider_job(session: Session, caller: Caller, job_id: str) -> Job:
    job = get(session, caller, job_id)
    if caller.role is not Role.PROVIDER:
        raise Forbidden("only providers of the job's data approve or reject it")
    return job


def _decide(session: Session, job: Job, party_id: str, decision: str, *, actor: str) -> None:
    existing = session.execute(
        select(Approval).where(Approval.job_id == job.id, Approval.party_id == party_id)
    ).scalar_one_or_none()
    if existing is None:
        session.add(Approval(job_id=job.id, party_id=party_id, digest=job.digest,
                             decision=decision, actor=actor))
    else:
        existing.decision, existing.actor, existing.digest = decision, actor, job.digest
    session.flush()
    audit.record(session, actor=actor, action=f"job.{decision}", subject=job.id,
                 detail={"party_id": party_id, "digest": job.digest})


def _maybe_approve(session: Session, job: Job) -> None:
    session.refresh(job, ["approvals"])
    approved = {a.party_id for a in job.approvals
                if a.decision == "approve" and a.digest == job.digest}
    if providers_of(job) <= approved:
        transition(session, job, State.APPROVED, actor="system:approvals")


def describe(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state,
        "digest": job.digest,
        "entrypoint": job.entrypoint,
        "inputs": job.manifest["inputs"],
        "outputs_declared": job.manifest["outputs"],
        "runtime": job.manifest["runtime"],
        "backend": job.backend,
        "insecure": job.insecure,
        "reason": job.reason,
        "attempts": job.attempts,
        "result": job.result,
        "approvals": [{"party": a.party.name, "decision": a.decision, "actor": a.actor,
                       "digest": a.digest, "at": a.at.isoformat()} for a in job.approvals],
        "transitions": [{"from": t.from_state, "to": t.to_state, "actor": t.actor,
                         "reason": t.reason, "at": t.at.isoformat()} for t in job.transitions],
        "outputs": [describe_output(o) for o in job.outputs],
    }


def describe_output(output: Output) -> dict[str, Any]:
    return {"name": output.name, "kind": output.kind, "status": output.status,
            "reason": output.reason, "sha256": output.sha256, "size": output.size,
            "media_type": output.media_type, "meta": output.meta}


__all__ = ["BundleError", "JobError", "approve", "cancel", "describe", "get", "reject", "submit",
           "visible"]


def review_output(session: Session, caller: Caller, job_id: str, name: str, decision: str,
                  reason: str | None, *, catalog: Catalog | None = None) -> Job:
    """A provider's verdict on an output waiting for review.

    Released once every provider of the job's data approved it; rejected by
    any one of them. The job is released when no output waits any more.
    """
    from veil.release import PENDING, REJECTED, RELEASED
    from veil.release.status import advance
    from veil.store.models import OutputReview

    job = _provider_job(session, caller, job_id)
    if decision not in ("approve", "reject"):
        raise JobError("decision must be 'approve' or 'reject'")
    if State(job.state) is not State.OUTPUT_REVIEW:
        raise JobError(f"job is {job.state}, not in output review")
    output = next((o for o in job.outputs if o.name == name), None)
    if output is None:
        raise NotFound(f"job has no output {name!r}")
    if output.status != PENDING:
        raise JobError(f"output {name!r} is {output.status}, not waiting for review")
    assert caller.party_id is not None
    if any(r.party_id == caller.party_id for r in output.reviews):
        raise JobError(f"your party already reviewed output {name!r}")
    session.add(OutputReview(output_id=output.id, party_id=caller.party_id, decision=decision,
                             actor=caller.actor, reason=reason))
    session.flush()
    session.refresh(output, ["reviews"])
    audit.record(session, actor=caller.actor, action=f"output.review_{decision}", subject=job.id,
                 detail={"output": name})
    if decision == "reject":
        output.status = advance(output.status, REJECTED)
        output.reason = reason or f"rejected by {caller.party}"
        if catalog is not None:  # a rejected output is never kept
            catalog.delete_output(job, name)
    elif providers_of(job) <= {r.party_id for r in output.reviews if r.decision == "approve"}:
        output.status, output.reason = advance(output.status, RELEASED), None
    session.flush()
    if all(o.status != PENDING for o in job.outputs):
        transition(session, job, State.RELEASED, actor="system:reviews")
    return job


def output_for_download(session: Session, caller: Caller, job_id: str, name: str) -> Output:
    """Released outputs go to the submitting consumer; reviewers may read what they review."""
    from veil.release import PENDING, RELEASED

    job = get(session, caller, job_id)
    output = next((o for o in job.outputs if o.name == name), None)
    if output is None:
        raise NotFound(f"job has no output {name!r}")
    if caller.role is Role.CONSUMER and output.status == RELEASED:
        return output
    if caller.role is Role.PROVIDER and output.status == PENDING:
        return output
    raise Forbidden(f"output {name!r} is {output.status}; not downloadable by you")
