"""Pre-flight: run a bundle on the caller's stage-1 views in the secure stage's sandbox, and
preview what the release gate would do with each output — before anyone approves anything.

Three steps, so that no DB lock is held and no event loop is blocked while the sandbox runs:

1. ``prepare`` (one short transaction): the same checks as ``service.submit`` (role, size,
   bundle, pinned plans, datasets the caller may use, backend), then the caller's stage-1 view
   of each input, its public rules and the caller's budget standing;
2. ``run`` (no DB): the bundle runs in the platform's sandbox backend with ``VEIL_STAGE=
   preflight`` — the same runtime, limits and diagnostics as stage 2 — where ``veil.load``
   returns the staged views and everything else behaves as in the secure stage (queries are
   plans, evaluated afterwards by trusted code);
3. ``preview`` (no DB): trusted code re-reads every published output. The workload is
   hostile here too: DP costs and group counts come from the host evaluating each published
   plan on the views with the same ``privacy.plans`` core as the release executor, never from
   what the notebook wrote. Budgets are checked with the ledger's own rule (``check_charge``).

Nothing is charged, stored or released: the views are what the caller may already download,
and the outputs folder is deleted with the run.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from veil import audit
from veil.catalog.service import Catalog, policy_of, schema_columns
from veil.identity import Caller, Forbidden
from veil.jobs.bundle import Bundle
from veil.jobs.limits import effective_limits
from veil.privacy import Budget, BudgetPolicy, check_charge
from veil.privacy.plans import PINNED_PLANS_FILE, PlanError, SourceRules, parse_pinned
from veil.release.gate import undeclared_reason
from veil.release.manifest import ManifestError, OutputEntry, read_manifest
from veil.stage import PREFLIGHT, PreflightIndex, PreflightView
from veil.tee.sandbox import SandboxBackend, SandboxLimits, SandboxRequest, SandboxResult

__all__ = ["OutputPreview", "PreflightPlan", "PreflightReport", "prepare", "preview", "run"]

Verdict = Literal["auto-release", "review", "refused"]
_MAX_PLAN_BYTES = 1 << 20
_REVIEW = "waits for review by every data provider: the notebook computed it"
_UNPINNED = ("its plan is not pinned in the bundle (veil.plans.json), so it waits for review "
             "by every data provider")


@dataclass(frozen=True)
class _Input:
    """One input as the caller may see it: its view, public rules, schema and budget."""

    name: str
    view_kind: str
    view: bytes
    rules: dict[str, Any]
    columns: frozenset[str]
    budget: tuple[BudgetPolicy, list[Budget]] | None


@dataclass(frozen=True)
class PreflightPlan:
    """Everything a pre-flight needs, read in one short transaction."""

    bundle: Bundle
    inputs: tuple[_Input, ...]
    limits: SandboxLimits
    pinned: Mapping[str, str]  # output name -> pinned plan digest


@dataclass
class OutputPreview:
    name: str
    kind: str
    verdict: Verdict
    reason: str | None = None
    epsilon: float | None = None
    delta: float | None = None
    charge_to: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreflightReport:
    ok: bool
    digest: str
    views: dict[str, str]
    run_s: float
    outputs: list[OutputPreview]
    budgets: list[dict[str, Any]]
    error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "digest": self.digest, "views": self.views,
                "run_s": round(self.run_s, 3), "charged": False, "released": False,
                "outputs": [vars(o) for o in self.outputs], "budgets": self.budgets,
                "error": self.error}


def prepare(session: Session, catalog: Catalog, caller: Caller, files: Mapping[str, bytes], *,
            entrypoint: str, inputs: Sequence[str], outputs: Sequence[str], backend: str,
            limits: SandboxLimits, max_bundle_bytes: int) -> PreflightPlan:
    """Check the would-be submission exactly as ``submit`` does and read the caller's views."""
    from veil.jobs.service import admit
    from veil.release import ledger

    bundle, datasets = admit(session, catalog, caller, files, entrypoint=entrypoint,
                             inputs=inputs, outputs=outputs, backend=backend,
                             max_bundle_bytes=max_bundle_bytes, doing="run pre-flights")
    party_id = caller.party_id
    if party_id is None:  # admit() refused it already; narrowed for the type checker
        raise Forbidden("only consumers run pre-flights")
    staged: list[_Input] = []
    policies = []
    for name, dataset in zip(bundle.inputs, datasets, strict=True):
        policy = policy_of(dataset)
        kind, view = catalog.view_bytes(session, caller, name, None)
        staged.append(_Input(name, kind, view, policy.public_rules(),
                             schema_columns(dataset.schema),
                             ledger.standing(session, dataset, party_id)))
        policies.append(policy.limits)
    pinned_file = bundle.files.get(PINNED_PLANS_FILE)
    pinned = ({} if pinned_file is None else
              {n: doc.digest for n, doc in parse_pinned(pinned_file).items()})
    audit.record(session, actor=caller.actor, action="job.preflight", subject=bundle.digest,
                 detail={"inputs": list(bundle.inputs),
                         "views": {i.name: i.view_kind for i in staged}})
    return PreflightPlan(bundle, tuple(staged), effective_limits(limits, policies), pinned)


def run(plan: PreflightPlan, sandbox: SandboxBackend, scratch: Path) -> PreflightReport:
    """Run the bundle on the views in ``sandbox`` and preview the gate; no DB, nothing kept."""
    _prune_stale(scratch)
    workdir = scratch / f"preflight-{secrets.token_hex(8)}"
    bundle_dir, inputs_dir, outputs_dir = (workdir / "bundle", workdir / "inputs",
                                           workdir / "outputs")
    try:
        for path in (workdir, bundle_dir, inputs_dir):
            path.mkdir(parents=True, mode=0o700)
        for name, data in plan.bundle.files.items():
            (bundle_dir / name).write_bytes(data)
        views = {}
        for number, inp in enumerate(plan.inputs):
            file = f"view-{number}.parquet"
            (inputs_dir / file).write_bytes(inp.view)
            views[inp.name] = PreflightView(file=file, kind=inp.view_kind, rules=inp.rules)
        PreflightIndex(datasets=views).write(inputs_dir)
        request = SandboxRequest(bundle_dir=bundle_dir, entrypoint=plan.bundle.entrypoint,
                                 inputs_dir=inputs_dir, outputs_dir=outputs_dir,
                                 limits=plan.limits, stage=PREFLIGHT,
                                 public_names=frozenset[str]().union(
                                     *(i.columns for i in plan.inputs)))
        started = time.monotonic()
        result = sandbox.run(request)
        seconds = time.monotonic() - started
        kinds = {i.name: i.view_kind for i in plan.inputs}
        if not result.ok:
            return PreflightReport(False, plan.bundle.digest, kinds, seconds, [], [],
                                   _error(result))
        try:
            outputs, budgets = preview(outputs_dir, plan)
        except ManifestError as exc:
            return PreflightReport(False, plan.bundle.digest, kinds, seconds, [], [],
                                   {"reason": f"outputs rejected: {exc}"})
        return PreflightReport(True, plan.bundle.digest, kinds, seconds, outputs, budgets)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _prune_stale(scratch: Path, max_age_s: float = 3600.0) -> None:
    """Remove what a crashed pre-flight left (views, outputs): far older than any run lasts."""
    cutoff = time.time() - max_age_s
    for entry in scratch.glob("preflight-*"):
        try:
            if entry.is_dir() and not entry.is_symlink() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _error(result: SandboxResult) -> dict[str, Any]:
    """The run's failure as the worker would report it: data-free by construction."""
    return {"reason": result.reason, "error_type": result.error_type, "cell": result.cell,
            "line": result.line, "message": result.message}


def preview(outputs_dir: Path, plan: PreflightPlan) -> tuple[list[OutputPreview],
                                                              list[dict[str, Any]]]:
    """The gate's verdict per output, and each budget's ε needed against ε left."""
    import pandas as pd

    frames = {i.name: pd.read_parquet(io.BytesIO(i.view)) for i in plan.inputs}
    rules = {i.name: SourceRules.from_public(i.name, i.rules) for i in plan.inputs}
    previews = [_one(entry, outputs_dir, plan, frames, rules)
                for entry in read_manifest(outputs_dir).outputs]
    return previews, _budgets(previews, plan)


def _one(entry: OutputEntry, outputs_dir: Path, plan: PreflightPlan,
         frames: Mapping[str, Any], rules: Mapping[str, SourceRules]) -> OutputPreview:
    if entry.name not in plan.bundle.outputs:
        return OutputPreview(entry.name, entry.kind, "refused", undeclared_reason(entry.name))
    if entry.kind in ("dp", "aggregate", "dp_model"):
        return OutputPreview(entry.name, entry.kind, "refused",
                             f"a {entry.kind} output can only come from the release executor; "
                             "this one was written by the notebook")
    if entry.kind == "model":
        return OutputPreview(entry.name, entry.kind, "review",
                             "a model the notebook trained waits for review by every data "
                             "provider, with the executor's membership-inference audit")
    if entry.kind != "plan":
        return OutputPreview(entry.name, entry.kind, "review", _REVIEW)
    return _plan(entry, outputs_dir, plan, frames, rules)


def _plan(entry: OutputEntry, outputs_dir: Path, plan: PreflightPlan,
          frames: Mapping[str, Any], rules: Mapping[str, SourceRules]) -> OutputPreview:
    """Evaluate the published plan on the views with trusted code, as the executor will."""
    from veil.privacy import DPResult
    from veil.privacy.plans import AggregateResult, evaluate, parse_plan
    from veil.privacy.training import DPModel

    path = outputs_dir / entry.file
    try:
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        if not data or len(data) > _MAX_PLAN_BYTES or \
                hashlib.sha256(data).hexdigest() != entry.sha256:
            raise PlanError("the plan file is missing or does not match the manifest")
        document = parse_plan(data)
    except (PlanError, OSError) as exc:
        return OutputPreview(entry.name, "plan", "refused", f"query refused: {exc}")
    query = document.query
    kind = {"dp": "dp", "aggregate": "aggregate", "train": "dp_model"}.get(query.kind, "plan")
    sources = list(query.relation.sources)
    pinned = plan.pinned.get(entry.name) == document.digest
    try:
        result = evaluate(document, frames, rules)
    except PlanError as exc:
        return OutputPreview(entry.name, kind, "refused", f"query refused: {exc}",
                             charge_to=sources)
    except Exception as exc:  # a library error on odd view data: say which, never the data
        return OutputPreview(entry.name, kind, "refused",
                             f"query could not be evaluated on the views: {type(exc).__name__}",
                             charge_to=sources)
    if isinstance(result, AggregateResult):
        detail = {"groups": result.groups, "dropped_on_views": result.dropped,
                  "min_group_size": result.min_group_size,
                  "smallest_kept_on_views": result.smallest_kept}
        note = (f"on the views, {result.dropped} of {result.groups} groups have fewer than "
                f"{result.min_group_size} people and would be dropped"
                if result.dropped else None)
        if not pinned:
            return OutputPreview(entry.name, kind, "review", _UNPINNED, charge_to=sources,
                                 detail=detail)
        return OutputPreview(entry.name, kind, "auto-release", note, charge_to=sources,
                             detail=detail)
    assert isinstance(result, DPResult | DPModel)
    return OutputPreview(entry.name, kind, "auto-release" if pinned else "review",
                         None if pinned else _UNPINNED + " (its ε is charged anyway)",
                         epsilon=float(result.epsilon), delta=float(result.delta),
                         charge_to=sources)


def _budgets(previews: list[OutputPreview], plan: PreflightPlan) -> list[dict[str, Any]]:
    """Charge the DP outputs in order against copies of the budgets, as ``ledger.charge`` does:
    a refusal there is a refusal here, with the same words."""
    standing = {i.name: i.budget for i in plan.inputs}
    spent = {name: list(b[1]) for name, b in standing.items() if b is not None}
    needed: dict[str, list[Budget]] = {name: [] for name in standing}
    for out in previews:
        if out.epsilon is None or out.verdict == "refused":
            continue
        cost = Budget(out.epsilon, out.delta or 0.0)
        unbudgeted = [s for s in out.charge_to if standing.get(s) is None]
        for source in out.charge_to:
            needed.setdefault(source, []).append(cost)
        if unbudgeted:
            out.verdict = "review"
            out.reason = (f"no privacy budget is set for {', '.join(unbudgeted)}; the DP "
                          "output waits for provider review")
            continue
        verdicts = {s: check_charge(standing[s][0], spent[s], [cost], subject=s)  # type: ignore[index]
                    for s in out.charge_to}
        refused = [(s, v) for s, v in verdicts.items() if not v.allowed]
        if refused:
            source, verdict = refused[0]
            out.verdict = "refused"
            out.reason = (f"budget exhausted on {source}: output needs epsilon "
                          f"{cost.epsilon:.4g}, {verdict.remaining_epsilon:.4g} left")
            continue
        for source in out.charge_to:
            spent[source].append(cost)
    rows = []
    for name, budget in standing.items():
        costs = needed.get(name, [])
        row: dict[str, Any] = {"dataset": name,
                               "epsilon_needed": round(sum(c.epsilon for c in costs), 9),
                               "delta_needed": sum(c.delta for c in costs)}
        if budget is None:
            row.update(epsilon_left=None, delta_left=None, fits=None, rule=None)
        else:
            policy, before = budget
            now = check_charge(policy, before, [], subject=name)
            after = check_charge(policy, before, costs, subject=name)
            row.update(epsilon_left=now.remaining_epsilon, delta_left=now.remaining_delta,
                       fits=after.allowed, rule=policy.rule)
        rows.append(row)
    return rows
