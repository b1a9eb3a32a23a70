"""The launcher side of one secure-stage run: measure, attest, release keys, attest outputs.

The worker stages only ciphertext. Before the run the launcher measures the bundle, runtime,
input digests and backend into a sealed event log and extends it into the job's own attester
(a per-job swtpm; the insecure attester only in explicit insecure-dev mode). During the run a
per-job key agent answers the workload: broker nonce, quote over report_data(nonce, key, job),
verifier appraisal, broker decision. After the run a final quote binds the output manifest.

The platform-wide services (verifier keys, AK, nonces) are ``veil.tee.services``; which
sandbox and attester a run uses is the ``veil.tee.backends.SecureStageBackend``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy.orm import Session

from veil import __version__, audit
from veil.catalog.service import Catalog
from veil.jobs.broker_store import SqlBrokerStore
from veil.release.executor import code_digest as executor_code_digest
from veil.release.manifest import ManifestError, read_manifest
from veil.stage import IndexEntry, InputIndex
from veil.store.db import Database
from veil.store.models import Job
from veil.tee.agent import (
    ChallengeRequest,
    KeyAgent,
    NonceReply,
    ReleaseRequest,
    SealedReply,
    parse_request,
)
from veil.tee.attestation import (
    AttestationError,
    DenialReason,
    EventLog,
    KeyReleaseDenied,
    report_data,
)
from veil.tee.attestation.evidence import Evidence
from veil.tee.backends import AGENT_SOCKET, Attester, AttesterUnavailable, SecureStageBackend
from veil.tee.broker import KeyBroker
from veil.tee.services import AttestationServices
from veil.tee.verifier import verify_result

__all__ = ["AttestationServices", "FinalAttestation", "JobLaunch", "LaunchError",
           "plan_launch"]


class LaunchError(AttestationError):
    """The launch could not be measured or attested; the job must not run."""


# -- one job ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    dataset_id: str
    full_name: str


class JobLaunch:
    """Context manager around one run: attester and key agent live exactly as long as it."""

    def __init__(self, services: AttestationServices, db: Database, catalog: Catalog, *,
                 job_id: str, bundle_digest: str, log: EventLog,
                 backend: SecureStageBackend, inputs: list[_Input]) -> None:
        self._services = services
        self._db = db
        self._catalog = catalog
        self.job_id = job_id
        self.bundle_digest = bundle_digest
        self._log = log
        self._backend = backend
        self._inputs = {i.dataset_id: i for i in inputs}
        self._attester: Attester | None = None
        self._agent: KeyAgent | None = None
        self._agent_dir: Path | None = None
        self._lock = threading.Lock()
        self.denials: list[str] = []
        self.timing: dict[str, float] = {"launch_attest_s": 0.0, "key_release_s": 0.0,
                                         "final_attest_s": 0.0}
        self.releases = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> JobLaunch:
        t0 = time.perf_counter()
        try:
            try:
                self._attester = self._backend.open_attester(self._services)
            except AttesterUnavailable as exc:
                raise LaunchError(str(exc)) from None
            self._attester.measure(self._log)
            self._agent_dir = Path(tempfile.mkdtemp(prefix="veil-ka-"))
            os.chmod(self._agent_dir, 0o755)
            self._agent = KeyAgent(self._agent_dir / AGENT_SOCKET, self._handle,
                                   max_requests=8 * max(1, len(self._inputs)))
            self._agent.start()
        except BaseException:
            self.close()
            raise
        self.timing["launch_attest_s"] = time.perf_counter() - t0
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self._agent_dir is not None:
            shutil.rmtree(self._agent_dir, ignore_errors=True)
            self._agent_dir = None
        if self._attester is not None:
            self._attester.close()
        self._attester = None

    def sandbox_wiring(self) -> tuple[dict[str, str], list[tuple[Path, str]]]:
        """Env and rw binds that put the agent socket into the sandbox."""
        assert self._agent_dir is not None
        return self._backend.agent_wiring(self._agent_dir)

    @property
    def agent_socket(self) -> Path:
        """The key agent's socket on the host, for the release executor after the run."""
        assert self._agent_dir is not None
        return self._agent_dir / AGENT_SOCKET

    def denial_reason(self) -> str | None:
        with self._lock:
            return self.denials[0] if self.denials else None

    # -- the agent's handler ------------------------------------------------------------------
    def _broker(self, session: Session) -> KeyBroker:
        return KeyBroker(SqlBrokerStore(session, self._catalog, self._services.nonces),
                         trusted_jwks=self._services.jwks, issuer=self._services.issuer)

    def _handle(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        request = parse_request(raw)
        if isinstance(request, ChallengeRequest):
            with self._db.transaction() as session:
                return NonceReply(self._broker(session).challenge()).to_wire()
        return self._release(request).to_wire()

    def _release(self, request: ReleaseRequest) -> SealedReply:
        t0 = time.perf_counter()
        dataset_id, nonce, key = request.dataset, request.nonce, request.tee_public_key
        entry = self._inputs.get(dataset_id)
        if entry is None:  # never reaches the broker: the agent serves this job's inputs only
            self._deny(_Input(dataset_id, "an undeclared dataset"), DenialReason.NOT_AN_INPUT,
                       "the job did not declare it as an input", audit_it=True)
            raise KeyReleaseDenied(DenialReason.NOT_AN_INPUT,
                                   "that dataset is not an input of this job")
        assert self._attester is not None
        try:
            evidence = self._attester.evidence(self._log, report_data(nonce, key, self.job_id))
            token = self._services.verifier.appraise(evidence, nonce=nonce,
                                                     tee_public_key=key, job=self.job_id)
        except AttestationError as exc:
            self._deny(entry, DenialReason.EVIDENCE_REJECTED, str(exc), audit_it=True)
            raise KeyReleaseDenied(DenialReason.EVIDENCE_REJECTED,
                                   "launch evidence did not verify") from None
        denied: KeyReleaseDenied | None = None
        with self._db.transaction() as session:
            try:
                sealed = self._broker(session).release(
                    dataset_id=dataset_id, job=self.job_id, attestation_result=token,
                    tee_public_key=key)
            except KeyReleaseDenied as exc:  # commit the nonce burn and the audited denial
                denied = exc
        self.timing["key_release_s"] += time.perf_counter() - t0
        if denied is not None:
            self._deny(entry, denied.reason, denied.message, audit_it=False)
            raise denied
        self.releases += 1
        return SealedReply(sealed.to_dict(), self.bundle_digest)

    def _deny(self, entry: _Input, reason: DenialReason, message: str, *,
              audit_it: bool) -> None:
        with self._lock:
            self.denials.append(f"key release denied for {entry.full_name}: {reason} "
                                f"({message})")
        if audit_it:
            with self._db.transaction() as session:
                audit.record(session, actor="system:kbs", action="kbs.release.denied",
                             subject=self.job_id, detail={"dataset": entry.dataset_id,
                                                          "job": self.job_id, "reason": reason})

    # -- after the run ------------------------------------------------------------------------
    def final_attestation(self, outputs_dir: Path) -> FinalAttestation:
        """The outputs as they are on disk, hashed once and quoted."""
        t0 = time.perf_counter()
        try:
            manifest = read_manifest(outputs_dir)
        except ManifestError as exc:
            raise LaunchError(f"outputs rejected: {exc}") from None
        entries = []
        for entry in manifest.outputs:
            path = outputs_dir / entry.file
            if path.is_symlink() or not path.is_file():
                raise LaunchError(f"outputs rejected: output {entry.name!r} has no regular file")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries.append({"name": entry.name, "kind": entry.kind, "file": entry.file,
                            "sha256": digest, "size": path.stat().st_size})
        doc: dict[str, Any] = {"outputs": entries}
        assert self._attester is not None
        from veil.tee.attestation import output_manifest_nonce

        nonce = output_manifest_nonce(doc)
        evidence: Evidence = self._attester.evidence(self._log,
                                                     report_data(nonce, "", self.job_id))
        token = self._services.verifier.appraise_final(evidence, output_manifest=doc,
                                                       job=self.job_id)
        result = verify_result(token, self._services.jwks(), issuer=self._services.issuer)
        self.timing["final_attest_s"] = time.perf_counter() - t0
        summary = {"hwmodel": result.hwmodel, "status": result.status,
                   "hardware_backed": result.hardware_backed, "backend": result.backend,
                   "key_releases": self.releases,
                   **{k: round(v, 4) for k, v in self.timing.items()},
                   "overhead_s": round(sum(self.timing.values()), 4)}
        return FinalAttestation(token, doc, summary,
                                {str(e["name"]): str(e["sha256"]) for e in entries})


@dataclass(frozen=True)
class FinalAttestation:
    """The final quote over the outputs: what the gate checks the files against."""

    token: str
    manifest: dict[str, Any]  # the attested output manifest (name, kind, file, sha256, size)
    summary: dict[str, Any]  # hwmodel, status, timings: shown in the job's result
    digests: dict[str, str]  # output name -> sha256 hex, as quoted

    def __post_init__(self) -> None:
        if set(self.digests) != {e["name"] for e in self.manifest["outputs"]}:
            raise LaunchError("final attestation digests and manifest disagree")


def plan_launch(services: AttestationServices, db: Database, catalog: Catalog, session: Session,
                job: Job, inputs_dir: Path, *, backend: SecureStageBackend,
                backend_config: Mapping[str, Any]) -> tuple[JobLaunch, InputIndex]:
    """Stage the job's ciphertext inputs and measure the launch; returns (launch, index)."""
    measured: list[dict[str, str]] = []
    entries: dict[str, IndexEntry] = {}
    inputs: list[_Input] = []
    for inp in job.inputs:
        dataset = inp.dataset
        file_name = f"{dataset.party.name}__{dataset.name}.enc"
        source = catalog.blobs.path(f"datasets/{dataset.id}/data.enc")
        target = inputs_dir / file_name
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        digest = "sha256:" + _file_sha256(target)
        if dataset.stored_digest is not None and dataset.stored_digest != digest:
            raise LaunchError(f"stored ciphertext of {dataset.full_name} changed since upload")
        measured.append({"id": dataset.id, "sha256": digest})
        entries[dataset.full_name] = IndexEntry(id=dataset.id, file=file_name,
                                                context=f"veil/dataset/{dataset.id}/data")
        inputs.append(_Input(dataset.id, dataset.full_name))
    manifest = job.manifest
    from veil.tee.attestation import measure_launch
    from veil.tee.runtime import packages_digest

    log = measure_launch(
        bundle_digest=job.digest,
        runtime={"veil": __version__, "bundle_runtime": str(manifest["runtime"]),
                 "release_executor": executor_code_digest(),
                 "packages": packages_digest()},  # the secure stage's distributions
        inputs=measured,
        backend=dict(backend_config),
        bundle_runtime=str(manifest["runtime"]),
        bundle_entrypoint=str(manifest["entrypoint"]),
        bundle_inputs=[str(x) for x in manifest["inputs"]],
        bundle_outputs=[str(x) for x in manifest["outputs"]],
    )
    launch = JobLaunch(services, db, catalog, job_id=job.id, bundle_digest=job.digest, log=log,
                       backend=backend, inputs=inputs)
    return launch, InputIndex(job=job.id, bundle_digest=job.digest, datasets=entries)


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()

