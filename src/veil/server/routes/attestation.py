"""Attestation results: a job's final token over its outputs, and the verifier's public keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from veil.identity import NotFound
from veil.jobs import service
from veil.server import schemas
from veil.server.deps import CallerDep, PlatformDep

router = APIRouter()
public = APIRouter()


@router.get("/jobs/{job_id}/attestation", response_model=schemas.JobAttestation)
def job_attestation(job_id: str, caller: CallerDep, platform: PlatformDep) -> dict[str, Any]:
    """The final token and the output manifest it binds (submitter and the job's providers)."""
    with platform.db.transaction() as session:
        job = service.get(session, caller, job_id)
        if job.attestation_token is None or job.output_manifest is None:
            raise NotFound("this job has no final attestation (it has not finished successfully)")
        return {"job": job.id, "token": job.attestation_token, "manifest": job.output_manifest,
                "jwks_uri": "/.well-known/jwks.json"}


@public.get("/.well-known/jwks.json")
def jwks(platform: PlatformDep) -> dict[str, Any]:
    """The verifier's signing keys (current and rotated-out): public, no authentication."""
    return platform.attestation.jwks()
