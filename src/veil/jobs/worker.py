"""The worker: claims approved jobs, runs them in the secure-stage backend,
passes their outputs through the release gate.

Claiming is a conditional UPDATE (approved -> running) so several workers, in
one process or many, never run a job twice. A worker heartbeats while a job
runs; a job whose heartbeat goes stale (its worker was killed) is re-queued
once and then failed with a reason, so a crash never loses a job silently.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from veil import audit
from veil.catalog.service import Catalog, policy_of, schema_columns
from veil.jobs.launcher import FinalAttestation, JobLaunch, LaunchError, plan_launch
from veil.jobs.lifecycle import StaleState, State, transition
from veil.jobs.limits import effective_limits
from veil.jobs.service import load_bundle
from veil.privacy.plans import PINNED_PLANS_FILE, parse_pinned
from veil.release import PENDING, REFUSED, Decision, InputRules, ManifestError, evaluate, ledger
from veil.release.executor import ExecutorError, ExecutorReport, execute_plans
from veil.release.manifest import WORKLOAD_KINDS
from veil.stage import ENV_JOB_ID, InputIndex
from veil.store.db import Database
from veil.store.models import Job, Output, utcnow
from veil.tee.backends import SecureStageBackend
from veil.tee.faults import PlatformFault
from veil.tee.sandbox import SandboxLimits, SandboxRequest
from veil.tee.services import AttestationServices

log = logging.getLogger("veil.worker")


@dataclass(frozen=True)
class _Prepared:
    """Everything one run needs, read from the database before the sandbox starts."""

    request: SandboxRequest
    rules: list[InputRules]
    launch: JobLaunch
    index: InputIndex
    public_rules: dict[str, dict[str, Any]]
    pinned: dict[str, str]  # output name -> plan digest fixed in the approved bundle
    declared: tuple[str, ...]  # the output names the providers approved with the digest


@dataclass
class Worker:
    db: Database
    catalog: Catalog
    backend: SecureStageBackend
    run_root: Path
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    lease_s: float = 30.0
    max_attempts: int = 2
    worker_id: str = field(default_factory=lambda: "worker-" + secrets.token_hex(4))
    attestation: AttestationServices | None = None

    # -- loop -------------------------------------------------------------------------------
    def run_forever(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        self.recover_stale()
        last_recovery = time.monotonic()
        while not stop.is_set():
            try:
                if time.monotonic() - last_recovery > self.lease_s:
                    self.recover_stale()
                    last_recovery = time.monotonic()
                if not self.run_one():
                    stop.wait(poll_s)
            except Exception:  # the loop must survive anything a job does
                log.exception("worker loop error")
                stop.wait(poll_s)

    def run_one(self) -> bool:
        """Claim and run one job; False if none was waiting."""
        job_id = self.claim()
        if job_id is None:
            return False
        self.execute(job_id)
        return True

    def claim(self) -> str | None:
        with self.db.transaction() as session:
            candidates = session.execute(
                select(Job).where(Job.state == State.APPROVED.value).order_by(Job.updated_at)
                .limit(5)
            ).scalars().all()
            for job in candidates:
                try:
                    with session.begin_nested():
                        transition(session, job, State.RUNNING, actor=f"system:{self.worker_id}",
                                   worker_id=self.worker_id, heartbeat_at=utcnow(),
                                   attempts=job.attempts + 1)
                    return job.id
                except StaleState:
                    continue
        return None

    def recover_stale(self) -> None:
        cutoff = utcnow() - timedelta(seconds=self.lease_s)
        with self.db.transaction() as session:
            stale = session.execute(
                select(Job).where(Job.state == State.RUNNING.value)
            ).scalars().all()
            for job in stale:
                beat = job.heartbeat_at
                if beat is not None and beat.tzinfo is None:
                    beat = beat.replace(tzinfo=cutoff.tzinfo)
                if beat is not None and beat > cutoff:
                    continue
                if job.attempts < self.max_attempts:
                    transition(session, job, State.APPROVED, actor="system:recovery",
                               reason=f"worker lost during attempt {job.attempts}; re-queued")
                else:
                    transition(session, job, State.FAILED, actor="system:recovery",
                               reason=f"worker lost during attempt {job.attempts}; giving up")

    # -- one job ----------------------------------------------------------------------------
    def execute(self, job_id: str) -> None:
        workdir = self.run_root / job_id
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, stop_beat), daemon=True)
        try:
            prepared = self._prepare(job_id, workdir)
            request, launch = prepared.request, prepared.launch
            beat.start()
            # The workload gets its keys only from the attested key agent of this launch.
            with launch:
                env, binds = launch.sandbox_wiring()
                request = replace(request, env={**request.env, **env},
                                  extra_rw_binds=[*request.extra_rw_binds, *binds])
                result = self.backend.sandbox.run(request)
                report = None
                if result.ok:  # the workload has exited: trusted code evaluates its plans
                    report = execute_plans(request.outputs_dir, request.inputs_dir,
                                           prepared.index, prepared.public_rules,
                                           launch.agent_socket,
                                           timeout_s=float(request.limits.wall_seconds))
                shutil.rmtree(request.inputs_dir, ignore_errors=True)
                final = launch.final_attestation(request.outputs_dir) if result.ok else None
            stop_beat.set()
            if final is None:
                self._fail(job_id, launch.denial_reason() or result.reason
                           or "the notebook failed",
                           {"error_type": result.error_type, "cell": result.cell,
                            "line": result.line, "message": result.message,
                            "duration_s": round(result.duration_s, 3),
                            "backend": result.backend, "insecure": result.insecure,
                            "attestation": {k: round(v, 4) for k, v in launch.timing.items()}})
                return
            assert report is not None
            self._release(job_id, request.outputs_dir, prepared, report, {
                "duration_s": round(result.duration_s, 3),
                "sandbox_start_s": result.sandbox_start_s,
                "backend": result.backend, "insecure": result.insecure,
                "executor": {"plans": len(report.executed) + len(report.failed),
                             "seconds": report.seconds},
                "attestation": final.summary}, final)
        except ExecutorError as exc:  # data-free by construction
            log.warning("job %s: %s", job_id, exc)
            self._fail(job_id, f"outputs rejected: {exc}", {})
        except PlatformFault as exc:  # the host failed, not the workload: run it again
            log.warning("job %s: platform fault: %s", job_id, exc)
            self._requeue_after_fault(job_id, exc)
        except LaunchError as exc:  # measured, data-free messages
            log.warning("job %s: %s", job_id, exc)
            self._fail(job_id, str(exc), {})
        except Exception as exc:  # fail the job, never the worker
            log.exception("job %s failed in the worker", job_id)
            self._fail(job_id, f"worker error: {type(exc).__name__}", {})
        finally:
            stop_beat.set()
            shutil.rmtree(workdir, ignore_errors=True)

    def _prepare(self, job_id: str, workdir: Path) -> _Prepared:
        shutil.rmtree(workdir, ignore_errors=True)
        bundle_dir, inputs_dir, outputs_dir = (workdir / "bundle", workdir / "inputs",
                                               workdir / "outputs")
        for path in (workdir, bundle_dir, inputs_dir, outputs_dir):
            path.mkdir(parents=True, mode=0o700)
        with self.db.transaction() as session:
            job = session.get(Job, job_id)
            assert job is not None
            bundle = load_bundle(self.catalog, job)
            for name, data in bundle.files.items():
                (bundle_dir / name).write_bytes(data)
            if self.attestation is None:
                raise LaunchError("no attestation services configured; refusing to run")
            rules = [InputRules(inp.dataset.id, inp.dataset.full_name,
                                policy_of(inp.dataset).min_group_size,
                                policy_of(inp.dataset).max_mia_advantage)
                     for inp in job.inputs]
            public_rules = {inp.dataset.full_name: policy_of(inp.dataset).public_rules()
                            for inp in job.inputs}
            pinned_file = bundle.files.get(PINNED_PLANS_FILE)
            pinned = ({} if pinned_file is None else
                      {name: doc.digest for name, doc in parse_pinned(pinned_file).items()})
            limits = effective_limits(self.limits, [policy_of(inp.dataset).limits
                                                    for inp in job.inputs])
            # Only ciphertext is staged; keys come from the broker inside the sandbox.
            launch, index = plan_launch(
                self.attestation, self.db, self.catalog, session, job, inputs_dir,
                backend=self.backend,
                backend_config={"name": self.backend.name, "insecure": job.insecure,
                                "limits": asdict(limits)})
            index.write(inputs_dir)
            audit.record(session, actor=f"system:{self.worker_id}", action="job.inputs_prepared",
                         subject=job_id, detail={"inputs": sorted(index.datasets)})
            entrypoint = job.entrypoint
            columns = frozenset[str]().union(*(schema_columns(inp.dataset.schema)
                                               for inp in job.inputs))
        request = SandboxRequest(bundle_dir=bundle_dir, entrypoint=entrypoint,
                                 inputs_dir=inputs_dir, outputs_dir=outputs_dir,
                                 limits=limits, env={ENV_JOB_ID: job_id},
                                 public_names=columns)
        return _Prepared(request, rules, launch, index, public_rules, pinned, bundle.outputs)

    def _release(self, job_id: str, outputs_dir: Path, prepared: _Prepared,
                 report: ExecutorReport, result: dict[str, object],
                 final: FinalAttestation) -> None:
        try:
            decisions = evaluate(outputs_dir, prepared.rules,
                                 max_output_bytes=self.limits.output_bytes,
                                 executed=report.executed, failed=report.failed,
                                 pinned=prepared.pinned, models=report.models,
                                 attested=final.digests, declared=prepared.declared)
        except ManifestError as exc:
            self._fail(job_id, f"outputs rejected: {exc}", result)
            return
        # Sealed before the transaction (crypto and I/O never run under the DB lock); refused
        # outputs are never kept, so what the ledger refuses below is dropped again.
        with self.db.transaction() as session:
            job = session.get(Job, job_id)
            assert job is not None
        staged = {d.entry.name: self.catalog.seal_output(job, d.entry.name, d.path)
                  for d in decisions if d.status != REFUSED}
        try:
            self._settle(job_id, decisions, staged, report, result, final)
        finally:
            for path in staged.values():
                path.unlink(missing_ok=True)

    def _settle(self, job_id: str, decisions: list[Decision], staged: dict[str, Path],
                report: ExecutorReport, result: dict[str, object],
                final: FinalAttestation) -> None:
        """One transaction: token, charges, output rows and blobs, the job's new state."""
        with self.db.transaction() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.state != State.RUNNING.value or job.worker_id != self.worker_id:
                return  # recovered by someone else meanwhile; their run wins
            job.attestation_token, job.output_manifest = final.token, final.manifest
            if report.executed or report.failed:
                audit.record(session, actor="system:executor", action="job.plans_executed",
                             subject=job.id, detail={
                                 "executed": sorted(report.executed),
                                 "failed": {n: f.reason for n, f in report.failed.items()},
                                 "seconds": report.seconds})
            ledger.charge(session, job_id=job.id, party_id=job.party_id,
                          datasets=[inp.dataset for inp in job.inputs], decisions=decisions)
            for decision in decisions:
                self._store_output(session, job, decision, staged.get(decision.entry.name))
            transition(session, job, State.OUTPUT_REVIEW, actor=f"system:{self.worker_id}",
                       result=result)
            if all(d.status != PENDING for d in decisions):
                transition(session, job, State.RELEASED, actor="system:gate")

    def _store_output(self, session: Session, job: Job, decision: Decision,
                      staged: Path | None) -> None:
        entry = decision.entry
        if decision.status != REFUSED and staged is not None:
            self.catalog.commit_output(staged, job, entry.name)
        # What the notebook wrote in its manifest is a claim: kept apart from the gate's and the
        # executor's facts, so a reviewer never reads a workload value as a measured one.
        meta = dict(decision.meta)
        if entry.meta and (entry.kind in WORKLOAD_KINDS or decision.status == REFUSED):
            meta["declared"] = entry.meta
        session.add(Output(job_id=job.id, name=entry.name, kind=entry.kind,
                           media_type=decision.media_type, sha256=entry.sha256, size=entry.size,
                           status=decision.status, reason=decision.reason, meta=meta))
        audit.record(session, actor="system:gate", action=f"output.{decision.status}",
                     subject=job.id, detail={"output": entry.name, "kind": entry.kind,
                                             "reason": decision.reason})

    def _fail(self, job_id: str, reason: str, result: dict[str, object]) -> None:
        with self.db.transaction() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != State.RUNNING.value:
                return
            transition(session, job, State.FAILED, actor=f"system:{self.worker_id}",
                       reason=reason, result=result)

    def _requeue_after_fault(self, job_id: str, fault: PlatformFault) -> None:
        """Put a job the platform failed back in the queue; fail it once attempts run out.

        A platform fault never counts against the workload: the reason names the fault, and the
        bound is the same ``max_attempts`` that covers a lost worker.
        """
        what = f"platform fault ({type(fault).__name__}: {str(fault)[:200]})"
        with self.db.transaction() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != State.RUNNING.value or job.worker_id != self.worker_id:
                return
            if job.attempts < self.max_attempts:
                transition(session, job, State.APPROVED, actor=f"system:{self.worker_id}",
                           reason=f"{what} during attempt {job.attempts}; re-queued")
            else:
                transition(session, job, State.FAILED, actor=f"system:{self.worker_id}",
                           reason=f"{what} during attempt {job.attempts} of "
                                  f"{self.max_attempts}; giving up")

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        while not stop.wait(max(self.lease_s / 3, 0.2)):
            try:
                with self.db.transaction() as session:
                    session.execute(update(Job).where(Job.id == job_id,
                                                      Job.worker_id == self.worker_id)
                                    .values(heartbeat_at=utcnow()))
            except Exception:
                log.exception("heartbeat failed for job %s", job_id)


__all__ = ["Worker"]
