"""The running platform: settings, database, blobs, keys, catalog and worker.

Built once by `create_platform`; the FastAPI app, the CLI's direct commands
and the tests all use the same object, so there is one way to wire things.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from veil.catalog.service import Catalog
from veil.crypto.keyring import LocalKeyring
from veil.jobs.sweep import SANDBOX_RUN_DIR, sweep_leftovers
from veil.jobs.views import ViewWorker
from veil.jobs.worker import Worker
from veil.settings import Settings
from veil.store import BlobStore, Database, open_database
from veil.tee.backends import SecureStageBackend, secure_stage_for
from veil.tee.sandbox import SandboxLimits
from veil.tee.services import AttestationServices


@dataclass
class Platform:
    settings: Settings
    db: Database
    catalog: Catalog
    attestation: AttestationServices
    secure_stage: SecureStageBackend
    workers: list[Worker] = field(default_factory=list)
    view_worker: ViewWorker | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def make_worker(self, limits: SandboxLimits | None = None) -> Worker:
        """A worker on the platform's one secure-stage backend."""
        worker = Worker(self.db, self.catalog, self.secure_stage, self.settings.run_dir,
                        limits=limits or operator_limits(self.settings),
                        lease_s=self.settings.worker_lease_s,
                        max_attempts=self.settings.max_attempts,
                        attestation=self.attestation)
        self.workers.append(worker)
        return worker

    def start_workers(self, count: int = 1, limits: SandboxLimits | None = None) -> None:
        """``count`` job workers, and the one view builder (even when ``count`` is 0: uploads
        must always become ready)."""
        self.start_view_worker()
        for _ in range(count):
            worker = self.make_worker(limits)
            thread = threading.Thread(target=worker.run_forever,
                                      args=(self._stop, self.settings.worker_poll_s),
                                      name=worker.worker_id, daemon=True)
            thread.start()
            self._threads.append(thread)

    def start_view_worker(self) -> None:
        """The background builder of stage-1 views (``veil.jobs.views``); started once."""
        if self.view_worker is not None:
            return
        self.view_worker = ViewWorker(self.db, self.catalog, lease_s=self.settings.worker_lease_s)
        thread = threading.Thread(target=self.view_worker.run_forever,
                                  args=(self._stop, self.settings.worker_poll_s),
                                  name=self.view_worker.worker_id, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.db.dispose()


def operator_limits(settings: Settings) -> SandboxLimits:
    """The operator's sandbox limits: the settings' knobs over the sandbox's defaults."""
    knobs = {"wall_seconds": settings.sandbox_wall_s, "cpu_seconds": settings.sandbox_cpu_s,
             "memory_bytes": settings.sandbox_memory_bytes,
             "max_processes": settings.sandbox_max_processes,
             "output_bytes": settings.sandbox_output_bytes}
    return SandboxLimits(**{k: v for k, v in knobs.items() if v is not None})


def create_platform(settings: Settings) -> Platform:
    settings.ensure_dirs()
    db = open_database(settings.db_url)
    catalog = Catalog(BlobStore(settings.blob_dir), LocalKeyring(settings.key_dir))
    sweep_leftovers(settings.run_dir, db)  # before any worker of ours makes new ones
    attestation = AttestationServices.open(settings.home, insecure_dev=settings.insecure_dev,
                                           run_dir=settings.run_dir)
    # Chosen once: submissions are checked against, and jobs run on, this one backend.
    secure_stage = secure_stage_for(insecure_dev=settings.insecure_dev,
                                    scratch_dir=settings.run_dir / SANDBOX_RUN_DIR,
                                    home=settings.home)
    return Platform(settings, db, catalog, attestation, secure_stage)
