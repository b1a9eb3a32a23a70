"""The API's public records: what every JSON route answers (FastAPI's ``response_model``).

Kept apart from the table models (``veil.store.models``), as the FastAPI template does, so a
new column never leaks by accident: ``extra="forbid"`` makes a field that a service adds
without a record here fail the tests instead of reaching clients. The web console, the
JupyterLab extension and the SDK consume these shapes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Public(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Me(_Public):
    user: str
    role: str
    party: str | None


class PartyCreated(_Public):
    id: str
    name: str


class UserCreated(_Public):
    id: str
    name: str
    role: str
    party: str | None
    token: str  # shown once; only its hash is stored


class AuditStatus(_Public):
    intact: bool
    events: int | None = None
    broken_at: int | None = None  # the first sequence number that no longer matches its hash


class Budget(_Public):
    consumer: str
    dataset: str
    epsilon_total: float
    delta_total: float
    epsilon_left: float
    delta_left: float
    rule: str
    renewal: str | None
    # Epsilon each stage-1 view spent (charged once, counted for every consumer, never renewed).
    views_epsilon: dict[str, float] = Field(default_factory=dict)


class Dataset(_Public):
    id: str
    name: str
    status: str
    rows: int | None
    views: list[str]
    view_info: dict[str, dict[str, Any]]
    content_digest: str | None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    rules: dict[str, Any]  # privacy unit and public group keys (for stage-1 queries)
    join_keys: list[str] = Field(default_factory=list)  # synthetic joinable keys in the views
    policy: dict[str, Any] | None = None  # the provider's own view only
    # The background view build (provider only): phase, progress 0..1, done phases, attempts,
    # views requested, and on failure the reason.
    build: dict[str, Any] | None = None


class Approval(_Public):
    party: str
    decision: str
    actor: str
    digest: str
    at: str


class Transition(_Public):
    from_: str | None = Field(alias="from")
    to: str
    actor: str
    reason: str | None
    at: str


class Output(_Public):
    name: str
    kind: str
    status: str
    reason: str | None
    sha256: str
    size: int
    media_type: str
    meta: dict[str, Any]


class Job(_Public):
    id: str
    state: str
    digest: str
    entrypoint: str
    inputs: list[str]
    outputs_declared: list[str]
    runtime: str
    backend: str
    insecure: bool
    reason: str | None
    attempts: int
    result: dict[str, Any] | None
    approvals: list[Approval]
    transitions: list[Transition]
    outputs: list[Output]


class BundleFile(_Public):
    path: str
    sha256: str
    size: int


class Bundle(_Public):
    """What a provider approves: the measured bundle document and its digest."""

    digest: str
    format: str
    runtime: str
    entrypoint: str
    inputs: list[str]
    outputs: list[str]
    files: list[BundleFile]


class PreflightOutput(_Public):
    """The gate's verdict on one output, previewed on the stage-1 views."""

    name: str
    kind: str
    verdict: Literal["auto-release", "review", "refused"]
    reason: str | None
    epsilon: float | None
    delta: float | None
    charge_to: list[str]
    detail: dict[str, Any]


class PreflightBudget(_Public):
    dataset: str
    epsilon_needed: float
    delta_needed: float
    epsilon_left: float | None  # None: the dataset has no budget (DP outputs go to review)
    delta_left: float | None
    fits: bool | None
    rule: str | None


class PreflightError(_Public):
    reason: str | None
    error_type: str | None = None
    cell: int | None = None
    line: int | None = None
    message: str | None = None


class Preflight(_Public):
    """A pre-flight run: nothing charged, nothing released (``charged``/``released`` say so)."""

    ok: bool
    digest: str
    views: dict[str, str]  # dataset -> the stage-1 view it ran on
    run_s: float
    charged: bool
    released: bool
    outputs: list[PreflightOutput]
    budgets: list[PreflightBudget]
    error: PreflightError | None


class RuntimePackage(_Public):
    name: str
    version: str


class JobAttestation(_Public):
    job: str
    token: str
    manifest: dict[str, Any]
    jwks_uri: str


class Health(_Public):
    status: str
    version: str
    insecure_dev: bool


class Runtime(_Public):
    """The secure stage's runtime: the bundle runtime string (part of every digest) and the
    Python distributions a workload can import, whose digest each launch measures."""

    runtime: str
    python: str
    implementation: str
    packages: list[RuntimePackage]
    packages_digest: str


class PartyInfo(_Public):
    id: str
    name: str
    created_at: str


class UserInfo(_Public):
    id: str
    name: str
    role: str
    party: str | None
    created_at: str


class TokenInfo(_Public):
    """A token's record; the token itself is never stored, so it is never listed."""

    id: str
    user: str
    role: str
    created_at: str
    revoked: bool


class TokenIssued(_Public):
    id: str  # the token whose record this is (revoked, for a rotation)
    user: str
    token: str  # the new token, shown once


class PolicyUpdated(_Public):
    dataset: Dataset
    diff: list[str]  # unified diff of the policy documents, as applied


class DatasetDeleted(_Public):
    id: str
    name: str
    status: str
    jobs_rejected: list[str]  # jobs that were waiting to read it


class AutoRuleAdded(_Public):
    digest: str
    consumer: str  # the consumer party whose submissions of this digest are now auto-approved
    datasets: list[str]  # the caller's datasets whose policies now carry the rule
