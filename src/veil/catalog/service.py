"""Datasets in the database: create, ingest, list and serve stage-1 views.

The service glues the data plane (ingest, views, envelope encryption) to the
store. Authorisation is decided here, not in the routes, so every entry point
(HTTP, CLI, worker) applies the same rules. Raw data has no read path at all:
the only readers of a dataset's ciphertext are view serving (for views) and the
worker preparing a secure-stage run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from veil import audit
from veil.catalog import status
from veil.catalog.errors import PolicyError
from veil.catalog.ingest import ingest, read_dataset
from veil.catalog.joinkeys import JoinKeys, Partner
from veil.catalog.policy import FIXED_AFTER_UPLOAD, DatasetPolicy, parse_policy, policy_diff
from veil.catalog.schema import Schema
from veil.catalog.viewconfig import check_view_config, requested_views
from veil.catalog.views import view_builders_for
from veil.crypto.envelope import DataKey, DecryptingReader, EncryptingWriter
from veil.crypto.keyring import LocalKeyring
from veil.identity import Caller, Conflict, Forbidden, NotFound, Role
from veil.names import (
    check_dataset,
    dataset_blob_prefix,
    dataset_data_key,
    dataset_join_key_blob,
    dataset_view_key,
    dataset_view_plot_key,
    output_blob_key,
)
from veil.store.blobs import BlobStore
from veil.store.db import Database
from veil.store.models import Dataset, DatasetView, Job, Party

VIEW_PREFERENCE = ("synthetic", "sample", "mock")
# The ledger's kind for the join keys' DP counts (beside the views': "view:joinkeys").
JOIN_KEYS_CHARGE = "joinkeys"
# How much epsilon a dataset's budget has left for a join-key overlap count (None: no limit).
JoinRoom = Callable[[Session, Dataset], float | None]


@dataclass
class BuiltViews:
    """Views sealed into staged blobs, waiting for `Catalog.publish_views`."""

    dataset_id: str
    staged: list[tuple[Path, str]] = field(default_factory=list)  # (staged path, blob key)
    views: list[DatasetView] = field(default_factory=list)
    joins: JoinKeys | None = None

    def discard(self) -> None:
        for path, _ in self.staged:
            path.unlink(missing_ok=True)

    def dp_costs(self) -> dict[str, tuple[float, float]]:
        """(epsilon, delta) each DP view, and the join keys' DP counts, spent on the data."""
        costs = {v.kind: (float(v.meta["dp"]["epsilon"]), float(v.meta["dp"]["delta"]))
                 for v in self.views if "dp" in v.meta}
        if self.joins is not None:
            costs[JOIN_KEYS_CHARGE] = (self.joins.epsilon, 0.0)
        return costs

    def partner_costs(self) -> dict[str, float]:
        """Epsilon the overlap counts spent on each other dataset (by id), charged to it too."""
        return {} if self.joins is None else self.joins.partner_epsilon()


@dataclass
class Catalog:
    """Everything dataset operations need; one per process."""

    blobs: BlobStore
    keyring: LocalKeyring

    # -- keys -------------------------------------------------------------------------------
    def data_key(self, dataset: Dataset) -> DataKey:
        assert dataset.wrapped_key is not None
        return self.keyring.kek(dataset.party_id).unwrap(dataset.wrapped_key,
                                                          context=_context(dataset.id, "data"))

    # -- create + ingest --------------------------------------------------------------------
    def create_draft(self, session: Session, caller: Caller, name: str, policy_text: str,
                     policy_format: str) -> Dataset:
        if caller.role is not Role.PROVIDER or caller.party_id is None:
            raise Forbidden("only providers create datasets")
        check_dataset(name)
        policy = parse_policy(policy_text, format=policy_format)  # type: ignore[arg-type]
        existing = session.execute(
            select(Dataset).where(Dataset.party_id == caller.party_id, Dataset.name == name)
        ).scalar_one_or_none()
        if existing is not None and existing.status == status.DELETED:
            raise Conflict(f"dataset {caller.party}/{name} was deleted; choose another name")
        if existing is not None and existing.status not in (status.DRAFT, status.FAILED):
            raise Conflict(f"dataset {caller.party}/{name} already exists")
        if existing is not None:
            if existing.status == status.FAILED:
                # Its views could not be built: start over with the new policy (the stored
                # data was never visible to anyone and its key goes with it).
                self.discard_blobs(existing.id)
                for view in list(existing.views):
                    session.delete(view)
                existing.status = status.DRAFT
                existing.schema = existing.rows = existing.bytes_in = None
                existing.content_digest = existing.stored_digest = None
                existing.wrapped_key = None
                existing.build = existing.build_worker = existing.build_heartbeat = None
            existing.policy = policy.model_dump(mode="json", by_alias=True)
            dataset = existing
        else:
            dataset = Dataset(party_id=caller.party_id, name=name,
                              policy=policy.model_dump(mode="json", by_alias=True),
                              status=status.DRAFT)
            session.add(dataset)
        session.flush()
        audit.record(session, actor=caller.actor, action="dataset.policy_set", subject=dataset.id,
                     detail={"name": name})
        return dataset

    def update_policy(self, session: Session, caller: Caller, dataset_id: str,
                      policy_text: str, policy_format: str) -> tuple[Dataset, list[str]]:
        """Replace a dataset's policy; returns the dataset and the diff that was applied.

        Validated like a new policy, and further: every consumer party named must exist (a
        misspelt name would silently share with no one), and once data is uploaded the fields
        its views were built under cannot change.
        """
        dataset = self.own_dataset(session, caller, dataset_id, lock=True)
        policy = parse_policy(policy_text, format=policy_format)  # type: ignore[arg-type]
        return dataset, self._replace_policy(session, caller, dataset, policy)

    def add_auto_rule(self, session: Session, caller: Caller, dataset_id: str, digest: str,
                      consumer: str) -> list[str]:
        """Approve `digest` automatically for `consumer` from now on; returns the diff."""
        dataset = self.own_dataset(session, caller, dataset_id, lock=True)
        policy = policy_of(dataset)
        updated = policy.model_copy(update={"approval": policy.approval.with_rule(digest,
                                                                                  consumer)})
        return self._replace_policy(session, caller, dataset, updated)

    def preview_policy(self, session: Session, caller: Caller, dataset_id: str,
                       policy_text: str, policy_format: str) -> list[str]:
        """The diff `update_policy` would apply, with the same checks; nothing is written."""
        dataset = self.own_dataset(session, caller, dataset_id)
        policy = parse_policy(policy_text, format=policy_format)  # type: ignore[arg-type]
        return self._checked(session, dataset, policy)[2]

    def _replace_policy(self, session: Session, caller: Caller, dataset: Dataset,
                        policy: DatasetPolicy) -> list[str]:
        new, old, diff = self._checked(session, dataset, policy)
        dataset.policy = new
        session.flush()
        audit.record(session, actor=caller.actor, action="dataset.policy_updated",
                     subject=dataset.id,
                     detail={"name": dataset.full_name,
                             "changed": sorted(k for k in new if new.get(k) != old.get(k))})
        return diff

    def _checked(self, session: Session, dataset: Dataset, policy: DatasetPolicy
                 ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """(new document, old document, diff) of a policy that may replace the dataset's."""
        if dataset.status == status.DELETED:
            raise Conflict("this dataset was deleted")
        new = policy.model_dump(mode="json", by_alias=True)
        old = policy_of(dataset).model_dump(mode="json", by_alias=True)
        problems: list[tuple[str, str]] = []
        if dataset.status == status.READY:
            problems += [(field, "fixed once data is uploaded; upload a new dataset instead")
                         for field in FIXED_AFTER_UPLOAD if new.get(field) != old.get(field)]
        parties = set(session.execute(select(Party.name)).scalars())
        named = [("consumers", c) for c in policy.consumers]
        named += [("approval.rules", c) for rule in policy.approval.rules
                  for c in rule.consumers]
        problems += [(field, f"no party named {name!r}") for field, name in named
                     if name not in parties]
        if problems:
            raise PolicyError("policy not updated", problems)
        diff = policy_diff(old, new)
        if not diff:
            raise Conflict("the proposed policy is the same as the current one")
        return new, old, diff

    def delete(self, session: Session, caller: Caller, dataset_id: str) -> Dataset:
        """Forget a dataset: its key (crypto-shredding the ciphertext), views and data.

        The row stays, marked deleted, so jobs and the audit log keep what they refer to;
        the caller discards the blobs (`discard_blobs`) once this transaction has committed.
        """
        dataset = self.own_dataset(session, caller, dataset_id, lock=True)
        if dataset.status == status.DELETED:
            raise Conflict("this dataset was already deleted")
        for view in list(dataset.views):
            session.delete(view)
        dataset.wrapped_key = None
        dataset.status = status.DELETED
        session.flush()
        audit.record(session, actor=caller.actor, action="dataset.deleted", subject=dataset.id,
                     detail={"name": dataset.full_name, "rows": dataset.rows,
                             "digest": dataset.content_digest})
        return dataset

    def ingest_data(self, db: Database, caller: Caller, dataset_id: str, source: IO[bytes],
                    *, filename: str, max_bytes: int) -> None:
        """Encrypt and store the data; the views are built afterwards, off the request path.

        Three steps, so that no DB transaction (on SQLite: the write lock) is held while the
        body streams in: check the draft, ingest into a staged blob with no transaction open
        (and check that the policy's views can be built for this data: every problem in one
        error), then check again and publish in one short transaction with status
        ``building``. A view builder (``veil.jobs.views``) takes it from there.
        """
        with db.transaction() as session:
            dataset = self.own_dataset(session, caller, dataset_id)
            if dataset.status != status.DRAFT:
                raise Conflict("dataset data is immutable once uploaded; create a new dataset")
            policy_doc = dataset.policy
            party_id = dataset.party_id
        policy = DatasetPolicy.model_validate(policy_doc)
        dek = DataKey.generate()
        key = dataset_data_key(dataset_id)
        staged = self.blobs.staging_path(key)
        try:
            result = ingest(source, filename=filename, max_bytes=max_bytes, dest=staged, dek=dek,
                            context=_context(dataset_id, "data"), policy=policy)
            check_view_config(policy, result.schema, result.rows)
            wrapped = self.keyring.kek(party_id).wrap(dek, context=_context(dataset_id, "data"))
            with db.transaction() as session:
                dataset = self.own_dataset(session, caller, dataset_id, lock=True)
                # A concurrent upload may have won, or the draft's policy may have been
                # replaced while this one streamed in (it was checked under the old one).
                if dataset.status != status.DRAFT:
                    raise Conflict("dataset data is immutable once uploaded; "
                                   "create a new dataset")
                if dataset.policy != policy_doc:
                    raise Conflict("the dataset policy changed during the upload; upload again")
                self.blobs.commit(staged, key)
                dataset.status = status.BUILDING
                dataset.build = {"phase": status.QUEUED, "progress": 0.0, "attempts": 0,
                                 "views": requested_views(policy)}
                dataset.schema = result.schema.model_dump(mode="json")
                dataset.rows = result.rows
                dataset.bytes_in = result.bytes_in
                dataset.content_digest = result.content_digest
                dataset.stored_digest = result.stored_digest
                dataset.wrapped_key = wrapped
                audit.record(session, actor=caller.actor, action="dataset.uploaded",
                             subject=dataset.id,
                             detail={"rows": result.rows, "digest": result.content_digest,
                                     "views": requested_views(policy)})
        except BaseException:
            staged.unlink(missing_ok=True)
            raise

    # -- view builds (driven by ``veil.jobs.views``; no transaction is held while building) --
    def build_views(self, db: Database, dataset_id: str,
                    progress: Callable[[str, float], None],
                    join_room: JoinRoom | None = None) -> BuiltViews:
        """Stream the stored data through the policy's view builders and seal each view into
        a staged blob. Slow (a DP fit may take a minute): runs with no transaction open;
        `publish_views` puts the result in place. ``join_room`` says how much epsilon a
        dataset's budget has left for join-key overlap counts (None: no limit)."""
        with db.transaction() as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None or dataset.status != status.BUILDING:
                raise Conflict("the dataset is not waiting for its views")
            policy = policy_of(dataset)
            schema = Schema.model_validate(dataset.schema)
            total = max(int(dataset.rows or 0), 1)
            dek = self.data_key(dataset)
        builders = view_builders_for(
            policy, collaboration=self.keyring.collaboration_key() if policy.join_keys else None,
            schema=schema)
        for builder in builders:
            inner = getattr(builder, "inner", builder)
            if hasattr(inner, "progress"):
                inner.progress = lambda phase, kind=builder.name: progress(
                    f"{kind} view: {phase}", 0.0)
        seen = 0
        progress(status.READING, 0.0)
        for batch in read_dataset(self.blobs.path(dataset_data_key(dataset_id)), dek,
                                  context=_context(dataset_id, "data")):
            for builder in builders:
                builder.observe(batch)
            seen += batch.num_rows
            progress(status.READING, min(seen / total, 1.0))
        built = BuiltViews(dataset_id)
        try:
            joins = next((j for b in builders if (j := getattr(b, "joins", None)) is not None),
                         None)
            if joins is not None:
                progress(status.JOIN_KEYS, 0.0)
                joins.resolve(self._join_partners(db, dataset_id, joins, join_room))
                self._stage_join_keys(built, dataset_id, dek, joins)
                built.joins = joins
            for i, builder in enumerate(builders):
                progress(f"{builder.name} view", i / len(builders))
                frame = builder.build(schema)
                view_key = dataset_view_key(dataset_id, builder.name)
                path = self.blobs.staging_path(view_key)
                built.staged.append((path, view_key))
                with path.open("wb") as fh, EncryptingWriter(
                        fh, dek, context=_context(dataset_id, f"view:{builder.name}")) as writer:
                    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), writer)
                built.views.append(DatasetView(dataset_id=dataset_id, kind=builder.name,
                                               rows=len(frame),
                                               meta=_view_meta(builders, builder.name)))
                report = getattr(builder, "report", None)
                if report is not None:  # the provider's plots, sealed like the view
                    plot_key = dataset_view_plot_key(dataset_id, builder.name)
                    plot = self.blobs.staging_path(plot_key)
                    built.staged.append((plot, plot_key))
                    png = plot.with_suffix(".png")
                    try:
                        report.plot_png(png)
                        with png.open("rb") as src, plot.open("wb") as fh, EncryptingWriter(
                                fh, dek, context=_context(dataset_id,
                                                          f"plot:{builder.name}")) as writer:
                            writer.write(src.read())
                    finally:
                        png.unlink(missing_ok=True)
            progress(status.STORING, 1.0)
        except BaseException:
            built.discard()
            raise
        return built

    def _join_partners(self, db: Database, dataset_id: str, joins: JoinKeys,
                       join_room: JoinRoom | None) -> dict[str, list[Partner]]:
        """The ready datasets whose view keys this build's may match, per join key: those
        with the same join key (and key type) and a consumer in common (nobody else sees both
        views), newest first, as long as both budgets have room for the overlap count."""
        wanted: list[tuple[str, str, DataKey, int, int, str]] = []
        with db.transaction() as session:
            me = session.get(Dataset, dataset_id)
            assert me is not None
            policy = policy_of(me)
            eps = policy.effective_join_epsilon
            views = policy.views.synthetic
            room = None if join_room is None else join_room(session, me)
            if room is not None:  # what the views and the distinct counts take first
                room -= (views.epsilon if views else 0.0) + eps * len(joins.columns)
            others = session.execute(
                select(Dataset).where(Dataset.status == status.READY, Dataset.id != dataset_id)
                .order_by(Dataset.created_at.desc())).scalars().all()
            for other in others:
                theirs = policy_of(other)
                if not set(theirs.consumers) & set(policy.consumers):
                    continue
                for column in joins.columns:
                    if column not in theirs.join_keys:
                        continue
                    position = theirs.join_keys.index(column)
                    if not all(self.blobs.path(dataset_join_key_blob(other.id, position, what))
                               .exists() for what in ("index", "keys")):
                        continue  # built before join keys had view keys of their own
                    if room is not None and room < eps:
                        continue
                    their_room = None if join_room is None else join_room(session, other)
                    if their_room is not None and their_room < eps:
                        continue
                    room = None if room is None else room - eps
                    wanted.append((other.id, other.full_name, self.data_key(other), position,
                                   theirs.join_key_d_in(column), column))
        partners: dict[str, list[Partner]] = {c: [] for c in joins.columns}
        for other_id, name, their_dek, position, d_in, column in wanted:
            index_key = dataset_join_key_blob(other_id, position, "index")
            keys_key = dataset_join_key_blob(other_id, position, "keys")
            stored = json.loads(self._open(keys_key, their_dek, other_id, f"joinkeys:{position}"))
            if bool(stored["integer"]) != joins.integer(column):
                continue  # an int key cannot match a text one (nothing was spent on it)
            tags = np.frombuffer(self._open(index_key, their_dek, other_id,
                                            f"joinindex:{position}"), dtype=np.uint64)
            partners[column].append(Partner(other_id, name, tags, float(stored["distinct"]),
                                            list(stored["keys"]), d_in))
        return partners

    def _stage_join_keys(self, built: BuiltViews, dataset_id: str, dek: DataKey,
                         joins: JoinKeys) -> None:
        """Seal each join key's index and view keys beside the views (for later datasets)."""
        assert joins.pools is not None
        for position, column in enumerate(joins.columns):
            blobs = ((f"joinindex:{position}", "index", joins.tags(column).tobytes()),
                     (f"joinkeys:{position}", "keys",
                      json.dumps(joins.pools[column].stored()).encode()))
            for what, kind, payload in blobs:
                key = dataset_join_key_blob(dataset_id, position, kind)
                path = self.blobs.staging_path(key)
                built.staged.append((path, key))
                with path.open("wb") as fh, EncryptingWriter(
                        fh, dek, context=_context(dataset_id, what)) as writer:
                    writer.write(payload)

    def _open(self, key: str, dek: DataKey, dataset_id: str, what: str) -> bytes:
        with self.blobs.path(key).open("rb") as fh:
            return DecryptingReader(fh, dek, context=_context(dataset_id, what)).read()

    def publish_views(self, session: Session, dataset: Dataset, built: BuiltViews) -> None:
        """Put staged views in place and mark the dataset ready (in the caller's short
        transaction, which also charges the views' DP cost)."""
        for path, view_key in built.staged:
            self.blobs.commit(path, view_key)
        for view in built.views:
            session.add(view)
        dataset.status = status.READY
        dataset.build = {**(dataset.build or {}), "phase": status.READY, "progress": 1.0}
        dataset.build_worker = None
        audit.record(session, actor="system:views", action="dataset.views_built",
                     subject=dataset.id,
                     detail={"views": [v.kind for v in built.views],
                             "dp_spent": {v.kind: v.meta["dp"] for v in built.views
                                          if "dp" in v.meta}})

    def fidelity_plot(self, session: Session, caller: Caller, full_name: str,
                      kind: str) -> bytes:
        """The provider's PNG of a DP view's fidelity (it is drawn from the real data)."""
        dataset = self.get(session, caller, full_name)
        if caller.role is not Role.PROVIDER or dataset.party_id != caller.party_id:
            raise NotFound(f"no fidelity plot of {full_name!r} for you (provider only)")
        key = dataset_view_plot_key(dataset.id, kind)
        if kind not in {v.kind for v in dataset.views} or not self.blobs.path(key).exists():
            raise NotFound(f"dataset {full_name!r} has no fidelity plot for a {kind} view")
        with self.blobs.path(key).open("rb") as fh:
            return DecryptingReader(fh, self.data_key(dataset),
                                    context=_context(dataset.id, f"plot:{kind}")).read()

    # -- job outputs: encrypted at rest like datasets --------------------------------------
    def seal_output(self, job: Job, name: str, source: Path) -> Path:
        """Stream ``source`` into a staged blob sealed under a fresh data key wrapped by the
        consumer party's KEK; ``commit_output`` puts it in place. Slow (crypto, I/O), so
        callers do it before their transaction, not inside it."""
        dek = DataKey.generate()
        context = _output_context(job.id, name)
        wrapped = self.keyring.kek(job.party_id).wrap(dek, context=context)
        staged = self.blobs.staging_path(output_blob_key(job.id, name))
        try:
            with source.open("rb") as src, staged.open("wb") as out:
                out.write(len(wrapped).to_bytes(2, "big") + wrapped)
                with EncryptingWriter(out, dek, context=context) as writer:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        writer.write(chunk)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return staged

    def commit_output(self, staged: Path, job: Job, name: str) -> None:
        self.blobs.commit(staged, output_blob_key(job.id, name))

    def get_output(self, job: Job, name: str) -> bytes:
        blob = self.blobs.get(output_blob_key(job.id, name))
        size = int.from_bytes(blob[:2], "big")
        context = _output_context(job.id, name)
        dek = self.keyring.kek(job.party_id).unwrap(blob[2:2 + size], context=context)
        return DecryptingReader(io.BytesIO(blob[2 + size:]), dek, context=context).read()

    def delete_output(self, job: Job, name: str) -> None:
        self.blobs.delete_prefix(output_blob_key(job.id, name))

    def discard_blobs(self, dataset_id: str) -> None:
        self.blobs.delete_prefix(dataset_blob_prefix(dataset_id))

    # -- reads ------------------------------------------------------------------------------
    def visible(self, session: Session, caller: Caller) -> Sequence[Dataset]:
        rows = session.execute(select(Dataset).order_by(Dataset.created_at)).scalars().all()
        return [d for d in rows if self.can_see(caller, d)]

    def can_see(self, caller: Caller, dataset: Dataset) -> bool:
        if caller.role is Role.ADMIN:
            return True
        if caller.role is Role.PROVIDER:
            return dataset.party_id == caller.party_id
        return dataset.status == status.READY and caller.party in policy_of(dataset).consumers

    def may_use(self, caller: Caller, dataset: Dataset) -> bool:
        """May this caller run jobs on (and see views of) this dataset?"""
        return (caller.role is Role.CONSUMER and dataset.status == status.READY
                and caller.party in policy_of(dataset).consumers)

    def get(self, session: Session, caller: Caller, full_name: str) -> Dataset:
        dataset = self.lookup(session, full_name)
        if dataset is None or not self.can_see(caller, dataset):
            raise NotFound(f"no dataset {full_name!r} visible to you")
        return dataset

    def lookup(self, session: Session, full_name: str) -> Dataset | None:
        owner, _, name = full_name.partition("/")
        return session.execute(
            select(Dataset).join(Party).where(Party.name == owner, Dataset.name == name)
        ).scalar_one_or_none()

    def view_bytes(self, session: Session, caller: Caller, full_name: str,
                   kind: str | None) -> tuple[str, bytes]:
        """The stage-1 view as Parquet: (kind, bytes). Never the raw data."""
        dataset = self.get(session, caller, full_name)
        available = {v.kind for v in dataset.views}
        if kind is None:
            kind = next((k for k in VIEW_PREFERENCE if k in available), None)
        if kind is None or kind not in available:
            raise NotFound(f"dataset {full_name!r} has no {kind or 'stage-1'} view")
        key = dataset_view_key(dataset.id, kind)
        with self.blobs.path(key).open("rb") as fh:
            plain = DecryptingReader(fh, self.data_key(dataset),
                                     context=_context(dataset.id, f"view:{kind}")).read()
        audit.record(session, actor=caller.actor, action="dataset.view_served",
                     subject=dataset.id, detail={"kind": kind})
        return kind, plain

    def own_dataset(self, session: Session, caller: Caller, dataset_id: str, *,
                    lock: bool = False) -> Dataset:
        """The caller's own dataset; `lock` takes its row lock (FOR UPDATE; a no-op on SQLite,
        whose transactions already hold the write lock)."""
        dataset = session.get(Dataset, dataset_id, with_for_update=lock)
        if dataset is None or caller.role is not Role.PROVIDER \
                or dataset.party_id != caller.party_id:
            raise NotFound("no such dataset of yours")
        return dataset


def _view_meta(builders: list[Any], kind: str) -> dict[str, Any]:
    """A DP view's cost (public) and fidelity report (provider-only, see `public_view_meta`);
    for a view with join keys, how its keys were drawn (public: from DP counts only)."""
    builder = next(b for b in builders if b.name == kind)
    report = getattr(builder, "report", None)
    meta = {} if report is None else {"dp": report.public_json(), "fidelity": report.to_json()}
    joins = getattr(builder, "joins", None)
    if joins is not None and joins.pools is not None:
        meta["join_keys"] = joins.summary()
    return meta


def public_view_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != "fidelity"}


def schema_columns(schema: dict[str, Any] | None) -> frozenset[str]:
    """A stored schema's column names (public: every consumer of the dataset sees them)."""
    columns = (schema or {}).get("columns") or []
    return frozenset(str(c["name"]) for c in columns if isinstance(c, dict) and "name" in c)


def policy_of(dataset: Dataset) -> DatasetPolicy:
    return DatasetPolicy.model_validate(dataset.policy)


def _output_context(job_id: str, name: str) -> bytes:
    return f"veil/job/{job_id}/output/{name}".encode()


def _context(dataset_id: str, what: str) -> bytes:
    return f"veil/dataset/{dataset_id}/{what}".encode()

