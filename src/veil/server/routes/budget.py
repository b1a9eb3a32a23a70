"""Remaining privacy budgets: consumers see their own, providers those on their datasets."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from veil.catalog.service import Catalog
from veil.identity import Caller, Role
from veil.release import ledger
from veil.server import schemas
from veil.server.deps import CallerDep, PlatformDep
from veil.store.models import Party

router = APIRouter()


@router.get("/budgets", response_model=list[schemas.Budget])
def budgets(caller: CallerDep, platform: PlatformDep) -> list[dict[str, Any]]:
    with platform.db.transaction() as session:
        return remaining_for(session, platform.catalog, caller)


def remaining_for(session: Session, catalog: Catalog, caller: Caller) -> list[dict[str, Any]]:
    """Budgets left per (dataset, consumer party) the caller may see (also the console's)."""
    rows: list[dict[str, Any]] = []
    parties = {p.name: p.id for p in session.execute(select(Party)).scalars()}
    for dataset in catalog.visible(session, caller):
        if dataset.status != "ready":
            continue
        consumers = dataset.policy.get("consumers", [])
        if caller.role is Role.CONSUMER:
            consumers = [caller.party]
        for party in consumers:
            if party not in parties:
                continue
            left = ledger.remaining(session, dataset, parties[party])
            if left is not None:
                rows.append({"consumer": party, **asdict(left),
                             "views_epsilon": ledger.view_spend(session, dataset)})
    return rows
