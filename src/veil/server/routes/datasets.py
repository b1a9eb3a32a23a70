"""Datasets: create (policy), upload (streamed), list, describe, stage-1 views, policy
updates and deletion.

There is deliberately no route that returns a dataset's raw data.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio.from_thread
import anyio.lowlevel
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from veil.catalog.errors import UploadTooLarge
from veil.catalog.schema import Schema
from veil.catalog.service import policy_of, public_view_meta
from veil.identity import Caller, Role
from veil.jobs import service
from veil.server import schemas
from veil.server.deps import CallerDep, PlatformDep, require
from veil.server.platform import Platform
from veil.store.models import Dataset

router = APIRouter()
Provider = Annotated[Caller, require(Role.PROVIDER)]


class DatasetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    policy: str
    policy_format: Literal["toml", "json"] = "toml"


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str = Field(max_length=256 * 1024)
    policy_format: Literal["toml", "json"] = "toml"


def describe(dataset: Dataset, *, owner_view: bool) -> dict[str, Any]:
    policy = policy_of(dataset)
    info: dict[str, Any] = {
        "id": dataset.id, "name": dataset.full_name, "status": dataset.status,
        "rows": dataset.rows, "views": sorted(v.kind for v in dataset.views),
        "view_info": {v.kind: {"rows": v.rows, **(v.meta if owner_view else
                                                   public_view_meta(v.meta))}
                      for v in dataset.views},
        "content_digest": dataset.content_digest,
        "schema": _public_schema(dataset.schema),
        # The privacy unit and public group keys: what stage-1 DP queries are evaluated with.
        "rules": policy.public_rules(),
        # Columns whose view values are view keys that join across providers' views.
        "join_keys": list(policy.join_keys),
    }
    if owner_view:
        info["policy"] = dataset.policy
        info["schema"] = dataset.schema
        info["build"] = dataset.build  # phase, progress, reason: the provider's own upload
    return info


def _public_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """Consumers see names, types and nullability; statistics stay with the provider."""
    if schema is None:
        return None
    return Schema.model_validate(schema).public().model_dump(mode="json", exclude_none=True)


@router.post("/datasets", status_code=201, response_model=schemas.Dataset,
             response_model_exclude_unset=True)
def create(body: DatasetIn, caller: Provider, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        dataset = platform.catalog.create_draft(session, caller, body.name, body.policy,
                                                body.policy_format)
        return describe(dataset, owner_view=True)


@router.put("/datasets/{dataset_id}/policy", response_model=schemas.PolicyUpdated)
def update_policy(dataset_id: str, body: PolicyIn, caller: Provider,
                  platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        dataset, diff = platform.catalog.update_policy(session, caller, dataset_id, body.policy,
                                                       body.policy_format)
        return {"dataset": describe(dataset, owner_view=True), "diff": diff}


@router.delete("/datasets/{dataset_id}", response_model=schemas.DatasetDeleted)
def delete(dataset_id: str, caller: Provider, platform: PlatformDep) -> dict[str, Any]:
    """Delete data, views and key; jobs waiting to read it are rejected; the audit keeps it."""
    return delete_dataset(platform, caller, dataset_id)


def delete_dataset(platform: Platform, caller: Caller, dataset_id: str) -> dict[str, Any]:
    with platform.db.transaction() as session:
        dataset, withdrawn = service.delete_dataset(session, platform.catalog, caller,
                                                    dataset_id)
        info = {"id": dataset.id, "name": dataset.full_name, "status": dataset.status,
                "jobs_rejected": withdrawn}
    # After the commit: the wrapped key is already gone, so a failure here leaves only
    # ciphertext that nobody can decrypt.
    platform.catalog.discard_blobs(dataset_id)
    return info


@router.put("/datasets/{dataset_id}/data", response_model=schemas.Dataset,
            response_model_exclude_unset=True)
async def upload(dataset_id: str, request: Request, caller: Provider, platform: PlatformDep,
                 filename: Annotated[str, Query(max_length=255)] = "upload.csv") -> dict[str, Any]:
    return await stream_upload(platform, caller, dataset_id, request, filename)


async def stream_upload(platform: Platform, caller: Caller, dataset_id: str, request: Request,
                        filename: str) -> dict[str, Any]:
    """Stream the body into the ingest thread; the catalog holds no DB transaction meanwhile.

    No request session here: the ingest thread pulls the body from the event loop, so the
    loop must never wait on a DB lock that thread could hold (see `Catalog.ingest_data`).
    Shared by the API and the console's upload.
    """
    limit = platform.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(f"upload exceeds the limit of {limit} bytes")
    reader = _BodyReader(request.stream(), limit, anyio.lowlevel.current_token())

    def work() -> dict[str, Any]:
        platform.catalog.ingest_data(platform.db, caller, dataset_id,
                                     io.BufferedReader(reader, 1 << 20),
                                     filename=filename, max_bytes=limit)
        with platform.db.transaction() as session:
            return describe(platform.catalog.own_dataset(session, caller, dataset_id),
                            owner_view=True)

    return await run_in_threadpool(work)


@router.get("/datasets", response_model=list[schemas.Dataset],
            response_model_exclude_unset=True)
def list_datasets(caller: CallerDep, platform: PlatformDep) -> list[dict[str, Any]]:
    with platform.db.transaction() as session:
        return [describe(d, owner_view=caller.party_id == d.party_id)
                for d in platform.catalog.visible(session, caller)]


@router.get("/datasets/{owner}/{name}", response_model=schemas.Dataset,
            response_model_exclude_unset=True)
def show(owner: str, name: str, caller: CallerDep, platform: PlatformDep) -> dict[str, Any]:
    with platform.db.transaction() as session:
        dataset = platform.catalog.get(session, caller, f"{owner}/{name}")
        return describe(dataset, owner_view=caller.party_id == dataset.party_id)


@router.get("/datasets/{owner}/{name}/view")
def view(owner: str, name: str, caller: CallerDep, platform: PlatformDep,
         kind: Literal["mock", "sample", "synthetic"] | None = None) -> Response:
    with platform.db.transaction() as session:
        served, data = platform.catalog.view_bytes(session, caller, f"{owner}/{name}", kind)
        return Response(data, media_type="application/vnd.apache.parquet",
                        headers={"X-Veil-View": served})


@router.get("/datasets/{owner}/{name}/fidelity.png")
def fidelity_plot(owner: str, name: str, caller: Provider, platform: PlatformDep,
                  kind: Literal["synthetic"] = "synthetic") -> Response:
    """The owner's fidelity plots of a DP view (drawn from the real data: provider only)."""
    with platform.db.transaction() as session:
        data = platform.catalog.fidelity_plot(session, caller, f"{owner}/{name}", kind)
        return Response(data, media_type="image/png")


class _BodyReader(io.RawIOBase):
    """A blocking file-like view of the async request body, for the ingest thread."""

    def __init__(self, stream: AsyncIterator[bytes], limit: int,
                 token: anyio.lowlevel.EventLoopToken) -> None:
        super().__init__()
        self._token = token  # pyarrow may read from its own I/O threads, not anyio's
        self._stream = stream
        self._limit = limit
        self._seen = 0
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    async def _next_chunk(self) -> bytes:
        return await self._stream.__anext__()

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._done:
            try:
                self._pending = anyio.from_thread.run(self._next_chunk, token=self._token)
            except StopAsyncIteration:
                self._done = True
            self._seen += len(self._pending)
            if self._seen > self._limit:
                raise UploadTooLarge(f"upload exceeds the limit of {self._limit} bytes")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
