"""The view builder: builds an uploaded dataset's stage-1 views in the background.

An upload stores the encrypted data and answers at once with status ``building``; this worker
(a thread of ``veil serve``, never the event loop) claims the dataset with a conditional UPDATE,
streams the stored data through the view builders with no transaction open, and then, in one
short transaction, puts the views in place, charges their DP cost to the dataset's ledger and
marks the dataset ``ready``. Progress (phase, fraction) is written in short transactions so
``veil dataset upload`` can show it; a failure marks the dataset ``failed`` with a reason the
provider can act on. A builder that dies is noticed by its stale heartbeat and the build is
retried by another, at most ``max_attempts`` times.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from veil import audit
from veil.catalog import status
from veil.catalog.service import JOIN_KEYS_CHARGE, BuiltViews, Catalog
from veil.errors import VeilError
from veil.identity import Conflict
from veil.release import ledger
from veil.store.db import Database
from veil.store.models import Dataset, utcnow

log = logging.getLogger("veil.views")

__all__ = ["ViewWorker"]


@dataclass
class ViewWorker:
    db: Database
    catalog: Catalog
    lease_s: float = 30.0
    max_attempts: int = 2
    progress_every_s: float = 0.5
    worker_id: str = field(default_factory=lambda: "views-" + secrets.token_hex(4))

    # -- loop -------------------------------------------------------------------------------
    def run_forever(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        while not stop.is_set():
            try:
                if not self.run_one():
                    stop.wait(poll_s)
            except Exception:  # the loop must survive any build
                log.exception("view builder loop error")
                stop.wait(poll_s)

    def run_one(self) -> bool:
        """Claim and build one dataset's views; False if none was waiting."""
        dataset_id = self.claim()
        if dataset_id is None:
            return False
        self.build(dataset_id)
        return True

    def claim(self) -> str | None:
        """Take a waiting build, or one whose builder stopped heartbeating."""
        cutoff = utcnow() - timedelta(seconds=self.lease_s)
        with self.db.transaction() as session:
            waiting = session.execute(
                select(Dataset).where(Dataset.status == status.BUILDING)
                .order_by(Dataset.created_at).limit(5)).scalars().all()
            for dataset in waiting:
                holder, beat = dataset.build_worker, dataset.build_heartbeat
                if beat is not None and beat.tzinfo is None:
                    beat = beat.replace(tzinfo=cutoff.tzinfo)
                if holder is not None and beat is not None and beat > cutoff:
                    continue  # a live builder has it
                build = dict(dataset.build or {})
                attempts = int(build.get("attempts", 0))
                holder_is = (Dataset.build_worker.is_(None) if holder is None
                             else Dataset.build_worker == holder)
                claimed = session.execute(
                    update(Dataset).where(Dataset.id == dataset.id,
                                          Dataset.status == status.BUILDING, holder_is)
                    .values(build_worker=self.worker_id, build_heartbeat=utcnow(),
                            build={**build, "attempts": attempts + 1, "phase": status.QUEUED,
                                   "progress": 0.0})
                    .execution_options(synchronize_session=False)
                ).rowcount  # type: ignore[attr-defined]
                if claimed != 1:
                    continue
                if attempts >= self.max_attempts:
                    self._mark_failed(session, dataset.id,
                                      f"the view build was interrupted {attempts} times (its "
                                      "builder stopped); create the dataset again")
                    continue
                return dataset.id
        return None

    # -- one build --------------------------------------------------------------------------
    def build(self, dataset_id: str) -> None:
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(dataset_id, stop_beat),
                                daemon=True, name=f"{self.worker_id}-beat")
        beat.start()
        built: BuiltViews | None = None
        started = time.monotonic()
        try:
            built = self.catalog.build_views(self.db, dataset_id, _Progress(self, dataset_id),
                                             join_room=ledger.join_room)
            with self.db.transaction() as session:
                dataset = session.get(Dataset, dataset_id, with_for_update=True)
                if dataset is None or dataset.status != status.BUILDING \
                        or dataset.build_worker != self.worker_id:
                    built.discard()  # another builder took over: its result counts
                    return
                ledger.charge_views(session, dataset, built.dp_costs())
                for other_id, epsilon in built.partner_costs().items():
                    other = session.get(Dataset, other_id, with_for_update=True)
                    if other is None or other.status != status.READY:
                        raise Conflict("a dataset whose join keys these views match was "
                                       "deleted during the build; upload again")
                    ledger.charge_join_overlap(session, other, epsilon, kind=JOIN_KEYS_CHARGE)
                    audit.record(session, actor=f"system:{self.worker_id}",
                                 action="dataset.join_overlap_charged", subject=other.id,
                                 detail={"by": dataset.full_name, "epsilon": epsilon})
                self.catalog.publish_views(session, dataset, built)
                dataset.build = {**(dataset.build or {}),
                                 "seconds": round(time.monotonic() - started, 2)}
        except Exception as exc:
            if built is not None:
                built.discard()
            if isinstance(exc, VeilError):
                reason = str(exc)  # written to be shown: names columns, never values
            else:
                log.exception("view build of dataset %s failed", dataset_id)
                reason = f"internal error while building the views ({type(exc).__name__}); " \
                         "see the server log"
            with self.db.transaction() as session:
                self._mark_failed(session, dataset_id, reason)
        finally:
            stop_beat.set()

    def _mark_failed(self, session: Any, dataset_id: str, reason: str) -> None:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.status != status.BUILDING:
            return
        dataset.status = status.FAILED
        dataset.build = {**(dataset.build or {}), "phase": status.FAILED, "reason": reason}
        dataset.build_worker = None
        audit.record(session, actor=f"system:{self.worker_id}", action="dataset.build_failed",
                     subject=dataset_id, detail={"reason": reason[:500]})

    def report(self, dataset_id: str, phase: str, fraction: float) -> None:
        with self.db.transaction() as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None or dataset.build_worker != self.worker_id:
                return
            done = list((dataset.build or {}).get("done", []))
            current = (dataset.build or {}).get("phase")
            if current and current != phase and current not in done \
                    and current != status.QUEUED:
                done.append(current)
            dataset.build = {**(dataset.build or {}), "phase": phase,
                             "progress": round(max(0.0, min(fraction, 1.0)), 3), "done": done}
            dataset.build_heartbeat = utcnow()

    def _heartbeat(self, dataset_id: str, stop: threading.Event) -> None:
        while not stop.wait(max(self.lease_s / 3, 0.2)):
            try:
                with self.db.transaction() as session:
                    session.execute(update(Dataset).where(Dataset.id == dataset_id,
                                                          Dataset.build_worker == self.worker_id)
                                    .values(build_heartbeat=utcnow())
                                    .execution_options(synchronize_session=False))
            except Exception:
                log.exception("view build heartbeat failed for dataset %s", dataset_id)


class _Progress:
    """Writes a build's phase and progress, at most every ``progress_every_s`` within a phase
    (every new phase at once), each in its own short transaction."""

    def __init__(self, worker: ViewWorker, dataset_id: str) -> None:
        self._worker = worker
        self._dataset_id = dataset_id
        self._phase: str | None = None
        self._last = 0.0

    def __call__(self, phase: str, fraction: float) -> None:
        now = time.monotonic()
        if phase == self._phase and now - self._last < self._worker.progress_every_s:
            return
        self._phase, self._last = phase, now
        try:
            self._worker.report(self._dataset_id, phase, fraction)
        except Exception:  # progress is best effort; the build goes on
            log.exception("could not record build progress of %s", self._dataset_id)
