"""Jobs: submit a bundle, approve/reject (providers), cancel, review and download outputs."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from veil.identity import Caller, NotFound, Role
from veil.jobs import service
from veil.jobs.bundle import BundleError
from veil.server import schemas
from veil.server.deps import CallerDep, PlatformDep, require
from veil.server.platform import Platform
from veil.store.models import Job

router = APIRouter()
Consumer = Annotated[Caller, require(Role.CONSUMER)]
Provider = Annotated[Caller, require(Role.PROVIDER)]
MAX_FILES = 32


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entrypoint: str
    inputs: list[str] = Field(min_length=1, max_length=64)
    outputs: list[str] = Field(default_factory=list, max_length=256)


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    digest: str


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: str = Field(pattern="^(approve|reject)$")
    reason: str | None = Field(default=None, max_length=500)


@router.post("/jobs", status_code=201, response_model=schemas.Job)
async def submit(request: Request, caller: Consumer, platform: PlatformDep) -> dict[str, Any]:
    """Read the whole form first, with no session open; then do the DB work in a thread.

    The DB work must not run on the event loop: on SQLite it waits for the write lock, and
    the holder of that lock (an upload, say) may need the loop to make progress.
    """
    spec, files = await _read_bundle_form(request, platform)
    return await run_in_threadpool(_submit, platform, caller, spec, files)


@router.post("/jobs/preflight", response_model=schemas.Preflight)
async def preflight(request: Request, caller: Consumer, platform: PlatformDep) -> dict[str, Any]:
    """Run the bundle on the caller's stage-1 views in the sandbox; preview the gate.

    Same form as ``POST /jobs``. The sandbox runs in a worker thread, after the short
    transaction that read the views has committed: no DB lock is held while it runs.
    """
    spec, files = await _read_bundle_form(request, platform)
    return await run_in_threadpool(_preflight, platform, caller, spec, files)


def _preflight(platform: Platform, caller: Caller, spec: JobSpec,
               files: dict[str, bytes]) -> dict[str, Any]:
    from veil.jobs import preflight
    from veil.server.platform import operator_limits

    with platform.db.transaction() as session:
        plan = preflight.prepare(session, platform.catalog, caller, files,
                                 entrypoint=spec.entrypoint, inputs=spec.inputs,
                                 outputs=spec.outputs, backend=platform.secure_stage.name,
                                 limits=operator_limits(platform.settings),
                                 max_bundle_bytes=platform.settings.max_bundle_bytes)
    scratch = platform.settings.run_dir / "_preflight"  # "_": never taken for a job dir
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    return preflight.run(plan, platform.secure_stage.sandbox, scratch).to_json()


async def _read_bundle_form(request: Request,
                            platform: Platform) -> tuple[JobSpec, dict[str, bytes]]:
    """The multipart form of a bundle (spec + files), size-checked before it is read."""
    limit = platform.settings.max_bundle_bytes
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) > limit + 64 * 1024:
        raise HTTPException(413, f"a bundle must declare its length and stay under {limit} bytes")
    form = await request.form(max_files=MAX_FILES, max_fields=4, max_part_size=64 * 1024)
    try:
        spec = JobSpec.model_validate(json.loads(str(form.get("spec") or "")))
    except (ValueError, ValidationError):
        raise BundleError("the job spec is missing or malformed") from None
    files: dict[str, bytes] = {}
    for upload in form.getlist("files"):
        if isinstance(upload, str) or not upload.filename:
            raise BundleError("every bundle file needs a file name")
        if upload.filename in files:
            raise BundleError(f"file {upload.filename!r} appears twice")
        files[upload.filename] = await upload.read()
    return spec, files


def _submit(platform: Platform, caller: Caller, spec: JobSpec,
            files: dict[str, bytes]) -> dict[str, Any]:
    # Committed before the response is sent, so a 201 means the job is durable.
    with platform.db.transaction() as session:
        job = service.submit(session, platform.catalog, caller, files,
                             entrypoint=spec.entrypoint, inputs=spec.inputs,
                             outputs=spec.outputs, backend=platform.secure_stage.name,
                             insecure=(platform.settings.insecure_dev
                                       or platform.secure_stage.insecure),
                             max_bundle_bytes=platform.settings.max_bundle_bytes)
        return service.describe(job)


@router.get("/jobs", response_model=list[schemas.Job])
def list_jobs(caller: CallerDep, platform: PlatformDep) -> list[dict[str, Any]]:
    with platform.db.transaction() as session:
        return [service.describe(job) for job in service.visible(session, caller)]


@router.get("/jobs/{job_id}", response_model=schemas.Job)
def show(job_id: str, caller: CallerDep, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        return service.describe(service.get(session, caller, job_id))


@router.get("/jobs/{job_id}/bundle", response_model=schemas.Bundle)
def bundle(job_id: str, caller: CallerDep, platform: PlatformDep) -> dict[str, Any]:
    """The measured bundle document (the digest is over exactly this): for whoever sees the job."""
    with platform.db.transaction() as session:
        job = service.get(session, caller, job_id)
        return {"digest": job.digest, **job.manifest}


@router.get("/jobs/{job_id}/bundle/{name}")
def bundle_file(job_id: str, name: str, caller: CallerDep, platform: PlatformDep) -> Response:
    """The code under review: for the submitter and the providers asked to approve it."""
    with platform.db.transaction() as session:
        job = service.get(session, caller, job_id)
        bundle = service.load_bundle(platform.catalog, job)
        if name not in bundle.files:
            raise NotFound(f"the bundle has no file {name!r}")
        return Response(bundle.files[name], media_type="application/octet-stream")


@router.post("/jobs/{job_id}/approve", response_model=schemas.Job)
def approve(job_id: str, body: Verdict, caller: Provider, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        return service.describe(service.approve(session, caller, job_id, body.digest))


@router.post("/jobs/{job_id}/auto-approve", response_model=schemas.AutoRuleAdded)
def auto_approve(job_id: str, caller: Provider, platform: PlatformDep) -> dict[str, Any]:
    """Approve this job's digest automatically for its consumer party from now on."""
    with platform.db.transaction() as session:
        digest, consumer, datasets = service.auto_approve_rule(session, platform.catalog,
                                                               caller, job_id)
        return {"digest": digest, "consumer": consumer, "datasets": datasets}


@router.post("/jobs/{job_id}/reject", response_model=schemas.Job)
def reject(job_id: str, body: Rejection, caller: Provider, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        return service.describe(service.reject(session, caller, job_id, body.reason))


@router.post("/jobs/{job_id}/cancel", response_model=schemas.Job)
def cancel(job_id: str, caller: Consumer, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        return service.describe(service.cancel(session, caller, job_id))


@router.post("/jobs/{job_id}/outputs/{name}/review", response_model=schemas.Job)
def review(job_id: str, name: str, body: Review, caller: Provider,
           platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        job = service.review_output(session, caller, job_id, name, body.decision, body.reason,
                                    catalog=platform.catalog)
        return service.describe(job)


@router.get("/jobs/{job_id}/outputs/{name}")
def download(job_id: str, name: str, caller: CallerDep, platform: PlatformDep) -> Response:
    with platform.db.transaction() as session:
        output = service.output_for_download(session, caller, job_id, name)
        job = session.get(Job, output.job_id)
        assert job is not None
    # Decrypted after the transaction: an output can be large, and released outputs never change.
    data = platform.catalog.get_output(job, output.name)
    return Response(data, media_type=output.media_type, headers={"X-Veil-Sha256": output.sha256})
