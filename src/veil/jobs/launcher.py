"""The launcher side of one secure-stage run: measure, attest, release keys, attest outputs.

The worker stages only ciphertext. Before the run the launcher measures the bundle, runtime,
input digests and backend into a sealed event log and extends it into the job's own attester
(a per-job swtpm; the insecure attester only in explicit insecure-dev mode). During the run a
per-job key agent answers the workload: broker nonce, quote over report_data(nonce, key, job),
verifier appraisal, broker decision. After the run a final quote binds the output manifest.

Broker nonces live in memory (``_NonceBook``): a nonce is only meaningful to the one worker
process whose agent issued it, and a restarted worker re-runs the job with a fresh agent, so a
table would add writes without adding any guarantee.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import select
from sqlalchemy.orm import Session

from veil import __version__, audit
from veil.catalog.policy import AttestationSpec
from veil.catalog.service import Catalog, policy_of
from veil.crypto.keys import SigningKeyRing
from veil.jobs.lifecycle import State
from veil.release.executor import code_digest as executor_code_digest
from veil.release.manifest import ManifestError, read_manifest
from veil.store.db import Database
from veil.store.models import Approval, Dataset, Job
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
    InsecureAttester,
    KeyReleaseDenied,
    SwtpmAttester,
    SwtpmUnavailableError,
    create_swtpm_state,
    enroll_ak,
    has_swtpm_state,
    report_data,
    swtpm_missing,
)
from veil.tee.attestation.evidence import Evidence
from veil.tee.broker import DatasetPolicy, KeyBroker, KeyPolicy
from veil.tee.verifier import Verifier, verify_result

__all__ = ["AGENT_SANDBOX_DIR", "AttestationServices", "JobLaunch", "LaunchError"]

ISSUER = "veil-verifier"
AGENT_SANDBOX_DIR = "/run/veil"
_AGENT_SOCKET = "agent.sock"
_KEY_FILE = "signing-keys.json"
_AK_FILE = "ak.pem"
SWTPM_RUN_DIR = "_tpm"  # under the run folder; job ids are hex, so no job dir collides
_OPEN_ATTEMPTS = 3


class LaunchError(AttestationError):
    """The launch could not be measured or attested; the job must not run."""


class _NonceBook:
    """Single-use broker nonces with expiry, shared by the agents of one process."""

    def __init__(self) -> None:
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def put(self, nonce: str, expires_at: float) -> None:
        with self._lock:
            self._nonces[nonce] = expires_at

    def consume(self, nonce: str, now: float) -> bool:
        with self._lock:
            expires = self._nonces.pop(nonce, None)
            for stale in [n for n, t in self._nonces.items() if t < now]:
                del self._nonces[stale]
        return expires is not None and now <= expires


@dataclass
class AttestationServices:
    """The platform's verifier keys, pinned AK and swtpm template (one per process)."""

    keyring: SigningKeyRing
    verifier: Verifier
    swtpm_template: Path | None
    swtpm_problem: str | None
    insecure_key: Ed25519PrivateKey | None
    nonces: _NonceBook = field(default_factory=_NonceBook)
    issuer: str = ISSUER
    swtpm_workdir: Path | None = None  # per-job swtpm state goes here (swept after a crash)

    def jwks(self) -> dict[str, Any]:
        return self.keyring.jwks()

    @classmethod
    def open(cls, home: Path, *, insecure_dev: bool = False, rotate_after_days: float = 30.0,
             run_dir: Path | None = None) -> AttestationServices:
        """Load (or create) the signing keys and the swtpm template under ``home``.

        Per-job swtpm state lives under ``run_dir`` (default: a temp dir per job).
        """
        keyring = _load_keyring(home / "keys" / "attest", rotate_after_days)
        template, problem, aks = None, swtpm_missing(), []
        if problem is None:
            template = home / "tpm"
            # A swtpm start can fail transiently (a loaded host); without a retry here the
            # server would stay without attestation for its whole life.
            for attempt in range(1, _OPEN_ATTEMPTS + 1):
                try:
                    aks.append(_pinned_ak(template))
                    problem = None
                    break
                except SwtpmUnavailableError as exc:
                    problem = f"software TPM unusable: {exc}"
                    break
                except AttestationError as exc:
                    problem = f"software TPM unusable: {exc}"
                    if template.is_dir() and not has_swtpm_state(template):
                        shutil.rmtree(template)  # half-made: manufacture it afresh next time
                    if attempt < _OPEN_ATTEMPTS:
                        time.sleep(0.2 * attempt)
            if problem is not None:
                template = None
        insecure_key = Ed25519PrivateKey.generate() if insecure_dev else None
        verifier = Verifier(
            keyring, issuer=ISSUER, trusted_aks=aks,
            insecure_keys=[insecure_key.public_key()] if insecure_key else (),
            allow_insecure=insecure_dev,
        )
        return cls(keyring, verifier, template, problem, insecure_key,
                   swtpm_workdir=run_dir / SWTPM_RUN_DIR if run_dir is not None else None)


def _load_keyring(directory: Path, rotate_after_days: float) -> SigningKeyRing:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    path = directory / _KEY_FILE
    if path.exists():
        ring = SigningKeyRing.load(directory)
        # save() rewrites the file on every rotation, so its mtime dates the newest key.
        if time.time() - path.stat().st_mtime > rotate_after_days * 86400:
            ring.rotate()
            ring.save(directory)
    else:
        ring = SigningKeyRing()
        ring.save(directory)
    return ring


def _pinned_ak(template: Path) -> Any:
    """The AK of swtpms started from ``template``; manufactured and enrolled once, then cached."""
    cache = template / _AK_FILE
    if not template.exists():
        template.mkdir(parents=True, mode=0o700)
        create_swtpm_state(template)
    if cache.exists():
        return load_pem_public_key(cache.read_bytes())
    from cryptography.hazmat.primitives import serialization

    key = enroll_ak(template)
    cache.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


# -- the broker's view of the database ------------------------------------------------------


class _SqlBrokerStore:
    """BrokerStore over one DB transaction: each decision commits with its audit event."""

    def __init__(self, session: Session, catalog: Catalog, nonces: _NonceBook) -> None:
        self._session = session
        self._catalog = catalog
        self._nonces = nonces

    def put_nonce(self, nonce: str, expires_at: float) -> None:
        self._nonces.put(nonce, expires_at)

    def consume_nonce(self, nonce: str, now: float) -> bool:
        return self._nonces.consume(nonce, now)

    def is_approved(self, *, provider: str, job: str, bundle_digest: str) -> bool:
        """Re-read at release time: a rejection or cancellation since approval wins."""
        row = self._session.get(Job, job)
        if row is None or row.state != State.RUNNING.value or row.digest != bundle_digest:
            return False
        approval = self._session.execute(
            select(Approval).where(Approval.job_id == job, Approval.party_id == provider)
        ).scalar_one_or_none()
        return (approval is not None and approval.decision == "approve"
                and approval.digest == bundle_digest)

    def _dataset(self, dataset_id: str) -> Dataset | None:
        dataset = self._session.get(Dataset, dataset_id)
        return dataset if dataset is not None and dataset.status == "ready" else None

    def dataset_policy(self, dataset_id: str) -> DatasetPolicy | None:
        dataset = self._dataset(dataset_id)
        if dataset is None:
            return None
        spec = policy_of(dataset).attestation or AttestationSpec()
        policy = KeyPolicy(
            allowed_backends=frozenset(spec.allowed_backends),
            required_status=spec.required_status,
            require_hardware_backed=spec.require_hardware_backed,
            allow_debug=spec.allow_debug,
            max_token_age_s=spec.max_token_age_s,
        )
        return DatasetPolicy(provider=dataset.party_id, policy=policy)

    def dataset_key(self, dataset_id: str) -> bytes:
        dataset = self._dataset(dataset_id)
        if dataset is None:
            raise KeyError(dataset_id)
        return bytes(self._catalog.data_key(dataset).to_bytes())

    def record(self, event: str, **fields: Any) -> None:
        audit.record(self._session, actor="system:kbs", action=event,
                     subject=str(fields.get("job") or "kbs"), detail=fields)


# -- one job ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    dataset_id: str
    full_name: str


class JobLaunch:
    """Context manager around one run: attester and key agent live exactly as long as it."""

    def __init__(self, services: AttestationServices, db: Database, catalog: Catalog, *,
                 job_id: str, bundle_digest: str, log: EventLog, backend: str,
                 inputs: list[_Input]) -> None:
        self._services = services
        self._db = db
        self._catalog = catalog
        self.job_id = job_id
        self.bundle_digest = bundle_digest
        self._log = log
        self._backend = backend
        self._inputs = {i.dataset_id: i for i in inputs}
        self._attester: SwtpmAttester | InsecureAttester | None = None
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
            if self._backend == "local-sandbox":
                if self._services.swtpm_template is None:
                    raise LaunchError(f"attestation unavailable: {self._services.swtpm_problem}")
                attester = SwtpmAttester(self._services.swtpm_template,
                                         workdir_parent=self._services.swtpm_workdir)
                self._attester = attester.__enter__()
            else:
                if self._services.insecure_key is None:
                    raise LaunchError("insecure evidence needs the explicit insecure-dev flag")
                self._attester = InsecureAttester(insecure=True, key=self._services.insecure_key)
            self._attester.measure(self._log)
            self._agent_dir = Path(tempfile.mkdtemp(prefix="veil-ka-"))
            os.chmod(self._agent_dir, 0o755)
            self._agent = KeyAgent(self._agent_dir / _AGENT_SOCKET, self._handle,
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
        if isinstance(self._attester, SwtpmAttester):
            self._attester.close()
        self._attester = None

    def sandbox_wiring(self) -> tuple[dict[str, str], list[tuple[Path, str]]]:
        """Env and rw binds that put the agent socket into the sandbox."""
        assert self._agent_dir is not None
        if self._backend == "local-sandbox":
            return ({"VEIL_KEY_AGENT": f"{AGENT_SANDBOX_DIR}/{_AGENT_SOCKET}"},
                    [(self._agent_dir, AGENT_SANDBOX_DIR)])
        return {"VEIL_KEY_AGENT": str(self._agent_dir / _AGENT_SOCKET)}, []

    @property
    def agent_socket(self) -> Path:
        """The key agent's socket on the host, for the release executor after the run."""
        assert self._agent_dir is not None
        return self._agent_dir / _AGENT_SOCKET

    def denial_reason(self) -> str | None:
        with self._lock:
            return self.denials[0] if self.denials else None

    # -- the agent's handler ------------------------------------------------------------------
    def _broker(self, session: Session) -> KeyBroker:
        return KeyBroker(_SqlBrokerStore(session, self._catalog, self._services.nonces),
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
    def final_attestation(self, outputs_dir: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(token, output manifest, summary): the outputs as they are on disk, quoted."""
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
        return token, doc, summary


def plan_launch(services: AttestationServices, db: Database, catalog: Catalog, session: Session,
                job: Job, inputs_dir: Path, *, backend: str,
                backend_config: Mapping[str, Any]) -> tuple[JobLaunch, dict[str, Any]]:
    """Stage the job's ciphertext inputs and measure the launch; returns (launch, inputs.json)."""
    measured: list[dict[str, str]] = []
    entries: dict[str, dict[str, str]] = {}
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
        entries[dataset.full_name] = {"id": dataset.id, "file": file_name,
                                      "context": f"veil/dataset/{dataset.id}/data"}
        inputs.append(_Input(dataset.id, dataset.full_name))
    manifest = job.manifest
    from veil.tee.attestation import measure_launch

    log = measure_launch(
        bundle_digest=job.digest,
        runtime={"veil": __version__, "bundle_runtime": str(manifest["runtime"]),
                 "release_executor": executor_code_digest()},
        inputs=measured,
        backend=dict(backend_config),
        bundle_runtime=str(manifest["runtime"]),
        bundle_entrypoint=str(manifest["entrypoint"]),
        bundle_inputs=[str(x) for x in manifest["inputs"]],
        bundle_outputs=[str(x) for x in manifest["outputs"]],
    )
    launch = JobLaunch(services, db, catalog, job_id=job.id, bundle_digest=job.digest, log=log,
                       backend=backend, inputs=inputs)
    index = {"job": job.id, "bundle_digest": job.digest, "datasets": entries}
    return launch, index


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def inputs_json(index: Mapping[str, Any]) -> str:
    return json.dumps(index, sort_keys=True)
