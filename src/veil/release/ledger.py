"""The privacy budget ledger: DP outputs are charged here, atomically, at release.

Each (dataset, consumer party) pair has the budget its provider set in the
dataset's policy. A job's DP outputs are charged, in order, to every dataset
the job read; an output that would overspend any of them is refused with the
dataset's name and what is left. All charges of one release happen in the
caller's transaction, under a lock per (dataset, party), so two releases
racing on the same budget can never both spend its last part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select, text
from sqlalchemy.orm import Session

from veil.names import VIEW_CHARGE_PREFIX, view_charge_name
from veil.privacy import Budget, BudgetPolicy, check_charge
from veil.privacy.errors import PrivacyError
from veil.release.gate import PENDING, REFUSED, RELEASED, TO_CHARGE, Decision
from veil.store.models import BudgetCharge, Dataset, utcnow


@dataclass(frozen=True)
class Remaining:
    dataset: str
    epsilon_total: float
    delta_total: float
    epsilon_left: float
    delta_left: float
    rule: str
    renewal: str | None


def charge(session: Session, *, job_id: str, party_id: str, datasets: Sequence[Dataset],
           decisions: Sequence[Decision]) -> None:
    """Turn every `TO_CHARGE` decision into released (charged), held (charged) or refused.

    Each is charged to the datasets its plan read (``Decision.charge_to``), all or nothing.
    """
    pending = [d for d in decisions if d.status == TO_CHARGE]
    if not pending:
        return
    maybe = {ds.id: _budget(ds) for ds in datasets}
    budgets = {k: v for k, v in maybe.items() if v is not None}
    _lock(session, list(budgets), party_id)
    spent = {ds.id: _spent(session, ds, party_id, budgets[ds.id])
             for ds in datasets if ds.id in budgets}
    for decision in pending:
        cost = Budget(float(decision.meta["epsilon"]), float(decision.meta["delta"]))
        read = [ds for ds in datasets
                if decision.charge_to is None or ds.full_name in decision.charge_to]
        unbudgeted = [ds.full_name for ds in read if ds.id not in budgets]
        if unbudgeted:
            decision.settle(PENDING, f"no privacy budget is set for {', '.join(unbudgeted)}; "
                                     "the DP output waits for provider review")
            continue
        verdicts = {ds.id: check_charge(budgets[ds.id], spent[ds.id], [cost],
                                        subject=ds.full_name) for ds in read}
        refused = [(ds, verdicts[ds.id]) for ds in read if not verdicts[ds.id].allowed]
        if refused:
            ds, verdict = refused[0]
            decision.settle(REFUSED, f"budget exhausted on {ds.full_name}: output needs epsilon "
                                     f"{cost.epsilon:.4g}, {verdict.remaining_epsilon:.4g} left")
            continue
        for ds in read:
            spent[ds.id].append(cost)
            session.add(BudgetCharge(dataset_id=ds.id, party_id=party_id, job_id=job_id,
                                     output_name=decision.entry.name, epsilon=cost.epsilon,
                                     delta=cost.delta))
        # Charged either way: the value was computed on the data, whether or not it leaves.
        decision.settle(PENDING if decision.hold else RELEASED, decision.hold)
        decision.meta["budget_left"] = {
            ds.full_name: {"epsilon": verdicts[ds.id].remaining_epsilon,
                           "delta": verdicts[ds.id].remaining_delta} for ds in read}
    session.flush()


class ViewOverBudget(PrivacyError):
    """A DP view would spend more than the dataset's budget allows."""


def charge_views(session: Session, dataset: Dataset,
                 costs: Mapping[str, tuple[float, float]]) -> None:
    """Charge what each DP view spent on the data, once, against every consumer's budget.

    A view is served to every consumer of the dataset, so its cost counts in each consumer
    party's spend (``_spent``), for as long as the view exists: it is never renewed away.
    Stored under the owner's party with no job. Raises :class:`ViewOverBudget` (nothing
    charged) if the views alone exceed the budget.
    """
    if not costs:
        return
    policy = _budget(dataset)
    if policy is not None:
        new = [Budget(eps, delta) for eps, delta in costs.values()]
        verdict = check_charge(policy, [], new, subject=dataset.full_name)
        if not verdict.allowed:
            raise ViewOverBudget(f"the views' DP cost exceeds the budget of {dataset.full_name}: "
                                 f"{verdict.reason}")
    for kind, (eps, delta) in costs.items():
        session.add(BudgetCharge(dataset_id=dataset.id, party_id=dataset.party_id, job_id=None,
                                 output_name=view_charge_name(kind), epsilon=eps, delta=delta))
    session.flush()


def join_room(session: Session, dataset: Dataset) -> float | None:
    """The epsilon every consumer of ``dataset`` still has (None: it has no budget): what a
    join-key overlap count, which stays released like a view, may take."""
    policy = _budget(dataset)
    if policy is None:
        return None
    parties = set(session.execute(select(BudgetCharge.party_id).where(
        BudgetCharge.dataset_id == dataset.id).distinct()).scalars()) | {dataset.party_id}
    return min(check_charge(policy, _spent(session, dataset, p, policy), []).remaining_epsilon
               for p in parties)


def charge_join_overlap(session: Session, dataset: Dataset, epsilon: float, *,
                        kind: str) -> None:
    """Charge an overlap count another dataset's view build released about this one, like a
    view's cost (for every consumer, never renewed away). Raises :class:`ViewOverBudget`
    (nothing charged) if a consumer's budget cannot take it."""
    room = join_room(session, dataset)
    if room is not None and epsilon > room * (1 + 1e-9):
        raise ViewOverBudget(f"the join-key overlap count needs epsilon {epsilon:.6g} of "
                             f"{dataset.full_name}, which has {room:.6g} left; upload again")
    session.add(BudgetCharge(dataset_id=dataset.id, party_id=dataset.party_id, job_id=None,
                             output_name=view_charge_name(kind), epsilon=epsilon, delta=0.0))
    session.flush()


def view_spend(session: Session, dataset: Dataset) -> dict[str, float]:
    """Epsilon each of the dataset's views (and its join keys) spent, e.g. for `veil budget`."""
    rows = session.execute(select(BudgetCharge).where(
        BudgetCharge.dataset_id == dataset.id, BudgetCharge.job_id.is_(None),
        BudgetCharge.output_name.startswith(VIEW_CHARGE_PREFIX))).scalars().all()
    spend: dict[str, float] = {}
    for r in rows:
        kind = r.output_name.removeprefix(VIEW_CHARGE_PREFIX)
        spend[kind] = spend.get(kind, 0.0) + r.epsilon
    return spend


def remaining(session: Session, dataset: Dataset, party_id: str) -> Remaining | None:
    """What a consumer party has left on a dataset (None: the dataset has no budget)."""
    policy = _budget(dataset)
    if policy is None:
        return None
    spent = _spent(session, dataset, party_id, policy)
    verdict = check_charge(policy, spent, [], subject=dataset.full_name)
    return Remaining(dataset.full_name, policy.epsilon, policy.delta, verdict.remaining_epsilon,
                     verdict.remaining_delta, policy.rule, policy.renewal)


def history(session: Session, dataset: Dataset, party_id: str) -> list[BudgetCharge]:
    """Every charge of a consumer party on a dataset, oldest first (for the console's chart)."""
    return list(session.execute(
        select(BudgetCharge).where(BudgetCharge.dataset_id == dataset.id,
                                   BudgetCharge.party_id == party_id)
        .order_by(BudgetCharge.at)).scalars())


def standing(session: Session, dataset: Dataset,
             party_id: str) -> tuple[BudgetPolicy, list[Budget]] | None:
    """A budget and what this period already spent on it (None: no budget): what `charge`
    checks against, for a preview that must decide the same way (``jobs.preflight``)."""
    policy = _budget(dataset)
    return None if policy is None else (policy, _spent(session, dataset, party_id, policy))


def _budget(dataset: Dataset) -> BudgetPolicy | None:
    raw = dataset.policy.get("budget")
    return None if raw is None else BudgetPolicy.model_validate(raw)


def _spent(session: Session, dataset: Dataset, party_id: str,
           policy: BudgetPolicy) -> list[Budget]:
    is_view = and_(BudgetCharge.job_id.is_(None),
                   BudgetCharge.output_name.startswith(VIEW_CHARGE_PREFIX))
    query = select(BudgetCharge).where(BudgetCharge.dataset_id == dataset.id,
                                       or_(BudgetCharge.party_id == party_id, is_view))
    start = policy.period_start(_aware(dataset.created_at), utcnow())
    rows = session.execute(query).scalars().all()
    # A view's cost never renews away: the view stays served.
    return [Budget(r.epsilon, r.delta) for r in rows
            if start is None or _aware(r.at) >= start
            or (r.job_id is None and r.output_name.startswith(VIEW_CHARGE_PREFIX))]


def _lock(session: Session, dataset_ids: Sequence[str], party_id: str) -> None:
    """Serialise charges per budget. SQLite's BEGIN IMMEDIATE already serialises writers."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for dataset_id in sorted(dataset_ids):  # fixed order: no deadlocks between releases
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                        {"k": f"budget:{dataset_id}:{party_id}"})


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
