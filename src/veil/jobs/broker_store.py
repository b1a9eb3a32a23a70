"""The key broker's view of the database: approvals, dataset policies and keys, audit.

One ``SqlBrokerStore`` per broker decision, over one transaction, so each decision commits
with its audit event. Approval is re-read at release time: a rejection or cancellation since
approval wins.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil import audit
from veil.catalog.policy import AttestationSpec
from veil.catalog.service import Catalog, policy_of
from veil.jobs.lifecycle import State
from veil.store.models import Approval, Dataset, Job
from veil.tee.broker import DatasetPolicy, KeyPolicy
from veil.tee.services import NonceBook

__all__ = ["SqlBrokerStore"]


class SqlBrokerStore:
    """BrokerStore over one DB transaction: each decision commits with its audit event."""

    def __init__(self, session: Session, catalog: Catalog, nonces: NonceBook) -> None:
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
