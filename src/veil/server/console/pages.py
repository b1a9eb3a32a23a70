"""The console's pages: thin like the API routes, through the same services.

Every page authorises its caller twice over: the role dependency keeps a consumer off
provider pages, and the service call (`jobs.service.get`, `output_for_download`,
`catalog.visible`, ...) applies the same per-object rules as the API. Every POST checks the
session's CSRF token before anything else. Like the API's routes these are plain `def`s
with short transactions; blobs are read and decrypted after the transaction closes.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from veil import audit, identity
from veil.catalog import status as dataset_status
from veil.catalog.errors import PolicyError
from veil.catalog.service import policy_of
from veil.identity import NotFound, Role
from veil.jobs import service
from veil.jobs.lifecycle import State
from veil.release import PENDING, RELEASED, ledger
from veil.server import schemas
from veil.server.console import render
from veil.server.console.auth import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    SIGNIN_PATH,
    AdminPage,
    ConsumerPage,
    CsrfRejected,
    ProviderPage,
    Signed,
    SignedDep,
    check_csrf,
    set_cookie,
)
from veil.server.console.templating import templates
from veil.server.deps import PlatformDep
from veil.server.routes.admin import party_info, token_info, user_info
from veil.server.routes.budget import remaining_for
from veil.server.routes.datasets import delete_dataset, stream_upload
from veil.server.routes.datasets import describe as describe_dataset
from veil.store.models import AuditEvent, Job

router = APIRouter()
FormStr = Annotated[str, Form()]
Csrf = Annotated[str, Form()]
FINAL_STATES = {State.RELEASED.value, State.FAILED.value, State.REJECTED.value,
                State.CANCELLED.value}
HOME = {Role.PROVIDER: "/provider", Role.CONSUMER: "/consumer", Role.ADMIN: "/admin"}
AUDIT_LIMIT = 300


def page(request: Request, name: str, signed: Signed | None, code: int = 200,
         **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"me": signed.caller if signed else None,
                        "csrf": signed.csrf if signed else "", **context},
        status_code=code, headers={"Cache-Control": "no-store"})


def back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- sign-in ------------------------------------------------------------------------------

@router.get(SIGNIN_PATH)
def signin_form(request: Request) -> HTMLResponse:
    return _signin_page(request, None, 200)


def _signin_page(request: Request, error: str | None, status: int) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = page(request, "signin.html", None, status, signin_csrf=token, error=error)
    set_cookie(request, response, SIGNIN_COOKIE, token, max_age=900, path=SIGNIN_PATH)
    return response


@router.post(SIGNIN_PATH)
def signin(request: Request, platform: PlatformDep, token: FormStr = "",
           csrf: Csrf = "") -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not csrf or not expected or not secrets.compare_digest(csrf.encode(), expected.encode()):
        raise CsrfRejected("the sign-in form's CSRF token is missing or wrong; reload the page")
    with platform.db.transaction() as session:
        opened = identity.open_session(session, token.strip()) if token.strip() else None
    if opened is None:
        return _signin_page(request, "That token is not valid (or was revoked).", 401)
    secret, _, caller = opened
    response = back(HOME[caller.role])
    set_cookie(request, response, SESSION_COOKIE, secret,
               max_age=int(identity.SESSION_TTL.total_seconds()))
    response.delete_cookie(SIGNIN_COOKIE, path=SIGNIN_PATH)
    return response


@router.post("/signout")
def signout(signed: SignedDep, platform: PlatformDep, csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        identity.close_session(session, signed.secret)
    response = back(SIGNIN_PATH)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(signed: SignedDep) -> Response:
    return back(HOME[signed.caller.role])


# -- provider -----------------------------------------------------------------------------

@router.get("/provider")
def provider_home(request: Request, signed: ProviderPage, platform: PlatformDep) -> Response:
    caller = signed.caller
    with platform.db.transaction() as session:
        jobs = [service.describe(j) for j in service.visible(session, caller)]
        datasets = [describe_dataset(d, owner_view=True)
                    for d in platform.catalog.visible(session, caller)]
        budgets = remaining_for(session, platform.catalog, caller)
    to_approve = [j for j in jobs if j["state"] == State.PENDING_APPROVAL.value
                  and not any(a["party"] == caller.party for a in j["approvals"])]
    to_review = [j for j in jobs if j["state"] == State.OUTPUT_REVIEW.value]
    return page(request, "provider_home.html", signed, to_approve=to_approve,
                to_review=to_review, jobs=list(reversed(jobs)), datasets=datasets,
                budgets=budgets)


@router.get("/provider/jobs/{job_id}")
def provider_job(request: Request, job_id: str, signed: ProviderPage,
                 platform: PlatformDep) -> Response:
    caller = signed.caller
    with platform.db.transaction() as session:
        job = service.get(session, caller, job_id)  # NotFound unless the job reads our data
        info = service.describe(job)
        facts = render.input_facts([policy_of(i.dataset) for i in job.inputs])
        readable = {o.name for o in job.outputs if o.status == PENDING}
        reviewed = {o.name: r.decision for o in job.outputs for r in o.reviews
                    if r.party_id == caller.party_id}
        earlier = service.earlier_approved_version(session, caller, job)
    bundle = service.load_bundle(platform.catalog, job)
    diff = None
    if earlier is not None:
        old = service.load_bundle(platform.catalog, earlier)
        diff = {"job": earlier.id, "digest": earlier.digest,
                "html": render.bundle_diff(old.files, bundle.files)}
    outputs = []
    for output in info["outputs"]:
        preview = None
        if output["name"] in readable and output["size"] > render.PREVIEW_MAX_BYTES:
            preview = render.Preview("none", hints=[
                f"{output['size']:,} bytes: too large to preview here; download it with "
                f"`veil job download {info['id']} {output['name']}`"])
        elif output["name"] in readable:
            data = platform.catalog.get_output(job, output["name"])
            preview = render.preview(output["kind"], output["media_type"], data,
                                     output["meta"], facts)
        outputs.append({**output, "preview": preview,
                        "facts": render.facts_rows(output["meta"]),
                        "reviewed": reviewed.get(output["name"])})
    decided = next((a for a in info["approvals"] if a["party"] == caller.party), None)
    return page(request, "provider_job.html", signed, job=info, files=render.render_bundle(
        bundle.files), outputs=outputs, decided=decided, diff=diff)


@router.post("/provider/jobs/{job_id}/approve")
def provider_approve(job_id: str, signed: ProviderPage, platform: PlatformDep,
                     digest: FormStr = "", csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        service.approve(session, signed.caller, job_id, digest)
    return back(f"/provider/jobs/{job_id}")


@router.post("/provider/jobs/{job_id}/reject")
def provider_reject(job_id: str, signed: ProviderPage, platform: PlatformDep,
                    reason: FormStr = "", csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        service.reject(session, signed.caller, job_id, reason.strip()[:500] or None)
    return back(f"/provider/jobs/{job_id}")


@router.post("/provider/jobs/{job_id}/outputs/{name}/review")
def provider_review(job_id: str, name: str, signed: ProviderPage, platform: PlatformDep,
                    decision: FormStr = "", reason: FormStr = "",
                    csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        service.review_output(session, signed.caller, job_id, name, decision,
                              reason.strip()[:500] or None, catalog=platform.catalog)
    return back(f"/provider/jobs/{job_id}#output-{name}")


@router.get("/provider/jobs/{job_id}/outputs/{name}/figure")
def provider_figure(job_id: str, name: str, signed: ProviderPage,
                    platform: PlatformDep) -> Response:
    """A pending figure, for its reviewers only (the same rule as the API's download)."""
    with platform.db.transaction() as session:
        output = service.output_for_download(session, signed.caller, job_id, name)
        job = service.get(session, signed.caller, job_id)
        media = output.media_type
    if media != "image/png":
        raise NotFound(f"output {name!r} is not a figure")
    return Response(platform.catalog.get_output(job, name), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


@router.post("/provider/jobs/{job_id}/auto-approve")
def provider_auto_approve(request: Request, job_id: str, signed: ProviderPage,
                          platform: PlatformDep, csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        digest, consumer, datasets = service.auto_approve_rule(session, platform.catalog,
                                                               signed.caller, job_id)
    return page(request, "notice.html", signed, title="Auto-approval rule added",
                message=f"{digest} is now approved automatically when {consumer} submits it "
                        f"to read {', '.join(datasets)}.", link=f"/provider/jobs/{job_id}")


@router.post("/provider/datasets")
def provider_new_dataset(signed: ProviderPage, platform: PlatformDep, name: FormStr = "",
                         policy: FormStr = "", policy_format: FormStr = "toml",
                         csrf: Csrf = "") -> Response:
    """Step one of an upload: the draft and its policy (validated); the data comes next."""
    check_csrf(signed, csrf)
    if policy_format not in ("json", "toml"):
        raise PolicyError("the policy format must be json or toml")
    with platform.db.transaction() as session:
        dataset = platform.catalog.create_draft(session, signed.caller, name.strip(), policy,
                                                policy_format)
        dataset_id = dataset.id
    return back(f"/provider/datasets/{dataset_id}#upload")


@router.put("/provider/datasets/{dataset_id}/data", response_model=schemas.Dataset,
            response_model_exclude_unset=True)
async def provider_upload(request: Request, dataset_id: str, signed: ProviderPage,
                          platform: PlatformDep,
                          filename: Annotated[str, Query(max_length=255)] = "upload.csv"
                          ) -> dict[str, Any]:
    """Step two, from the page's script: the file streamed as the body, with a progress bar.

    The CSRF token travels in a header (a cross-site form cannot set one, nor send a PUT).
    """
    check_csrf(signed, request.headers.get("x-csrf-token", ""))
    return await stream_upload(platform, signed.caller, dataset_id, request, filename)


@router.get("/provider/datasets/{dataset_id}")
def provider_dataset(request: Request, dataset_id: str, signed: ProviderPage,
                     platform: PlatformDep) -> Response:
    with platform.db.transaction() as session:
        dataset = platform.catalog.own_dataset(session, signed.caller, dataset_id)
        info = describe_dataset(dataset, owner_view=True)
        budgets = [b for b in remaining_for(session, platform.catalog, signed.caller)
                   if b["dataset"] == info["name"]]
        parties = {p.name: p.id for p in identity.list_parties(session)}
        for budget in budgets:
            charges = ledger.history(session, dataset, parties[budget["consumer"]])
            budget["chart"] = render.budget_chart(
                [(c.at.isoformat(), c.epsilon) for c in charges], budget["epsilon_total"])
    policy = json.dumps(info["policy"], indent=2, sort_keys=True)
    return page(request, "provider_dataset.html", signed, dataset=info, budgets=budgets,
                policy_text=policy, policy_format="json", diff=None,
                refresh=info["status"] == dataset_status.BUILDING)


@router.post("/provider/datasets/{dataset_id}/policy")
def provider_policy(request: Request, dataset_id: str, signed: ProviderPage,
                    platform: PlatformDep, policy: FormStr = "", policy_format: FormStr = "json",
                    confirm: FormStr = "", csrf: Csrf = "") -> Response:
    """First a diff to confirm (nothing written), then, confirmed, the update itself."""
    check_csrf(signed, csrf)
    if policy_format not in ("json", "toml"):
        raise PolicyError("the policy format must be json or toml")
    with platform.db.transaction() as session:
        if confirm != "yes":
            diff = platform.catalog.preview_policy(session, signed.caller, dataset_id, policy,
                                                   policy_format)
            dataset = platform.catalog.own_dataset(session, signed.caller, dataset_id)
            info = describe_dataset(dataset, owner_view=True)
        else:
            platform.catalog.update_policy(session, signed.caller, dataset_id, policy,
                                           policy_format)
    if confirm != "yes":
        return page(request, "provider_dataset.html", signed, dataset=info, budgets=[],
                    policy_text=policy, policy_format=policy_format, diff=diff)
    return back(f"/provider/datasets/{dataset_id}")


@router.post("/provider/datasets/{dataset_id}/delete")
def provider_delete(dataset_id: str, signed: ProviderPage, platform: PlatformDep,
                    confirm_name: FormStr = "", csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        name = platform.catalog.own_dataset(session, signed.caller, dataset_id).full_name
    if confirm_name.strip() != name:
        raise identity.IdentityError(f"type the dataset's name, {name}, to delete it")
    delete_dataset(platform, signed.caller, dataset_id)
    return back("/provider")


# -- consumer -----------------------------------------------------------------------------

@router.get("/consumer")
def consumer_home(request: Request, signed: ConsumerPage, platform: PlatformDep) -> Response:
    caller = signed.caller
    with platform.db.transaction() as session:
        jobs = [service.describe(j) for j in service.visible(session, caller)]
        datasets = [describe_dataset(d, owner_view=False)
                    for d in platform.catalog.visible(session, caller)]
        budgets = remaining_for(session, platform.catalog, caller)
    live = any(j["state"] not in FINAL_STATES for j in jobs)
    return page(request, "consumer_home.html", signed, jobs=list(reversed(jobs)),
                datasets=datasets, budgets=budgets, refresh=live)


@router.get("/consumer/jobs/{job_id}")
def consumer_job(request: Request, job_id: str, signed: ConsumerPage,
                 platform: PlatformDep) -> Response:
    with platform.db.transaction() as session:
        job = service.get(session, signed.caller, job_id)
        info = service.describe(job)
        token = job.attestation_token
    verdict = None
    if token is not None:
        verdict = _verdict(platform, job, token)
    return page(request, "consumer_job.html", signed, job=info, verdict=verdict,
                released=RELEASED, refresh=info["state"] not in FINAL_STATES)


def _verdict(platform: Any, job: Job, token: str) -> dict[str, Any]:
    """`veil attest verify` on the server's side: the token against the verifier's JWKS and
    the bundle as stored, claim by claim (`veil.sdk.verify`, the one implementation)."""
    from veil.sdk.verify import verify_token

    bundle = service.load_bundle(platform.catalog, job)
    with tempfile.TemporaryDirectory(prefix="veil-verify-") as tmp:
        paths = []
        for name, data in bundle.files.items():
            path = Path(tmp) / name
            path.write_bytes(data)
            paths.append(path)
        verdict = verify_token(token, platform.attestation.jwks(), bundle_files=paths)
    claims = render.facts_rows({k: v for k, v in verdict.claims.items()})
    return {"ok": verdict.ok, "checks": verdict.checks, "claims": claims}


@router.get("/consumer/jobs/{job_id}/outputs/{name}")
def consumer_download(job_id: str, name: str, signed: ConsumerPage,
                      platform: PlatformDep) -> Response:
    with platform.db.transaction() as session:
        output = service.output_for_download(session, signed.caller, job_id, name)
        job = service.get(session, signed.caller, job_id)
        media, digest = output.media_type, output.sha256
    from veil.release.manifest import EXTENSIONS

    filename = f"{name}.{EXTENSIONS.get(output.kind, 'bin')}"
    return Response(platform.catalog.get_output(job, name), media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "X-Veil-Sha256": digest, "Cache-Control": "no-store"})


# -- admin --------------------------------------------------------------------------------

@router.get("/admin")
def admin_home(request: Request, signed: AdminPage, platform: PlatformDep) -> Response:
    with platform.db.transaction() as session:
        parties = [party_info(p) for p in identity.list_parties(session)]
        users = [user_info(u) for u in identity.list_users(session)]
        tokens = [token_info(t) for t in identity.list_tokens(session)]
    return page(request, "admin_home.html", signed, parties=parties, users=users,
                tokens=list(reversed(tokens)), status=_status(platform))


def _status(platform: Any) -> dict[str, Any]:
    from veil import __version__

    attestation = platform.attestation
    stage = platform.secure_stage
    return {"version": __version__, "insecure_dev": platform.settings.insecure_dev,
            "backend": stage.name, "backend_insecure": stage.insecure,
            "attestation": ("software TPM (swtpm) ready" if attestation.swtpm_template
                            else f"unavailable: {attestation.swtpm_problem}"),
            "workers": len(platform.workers)}


def _issued(request: Request, signed: Signed, user: str, token: str, what: str) -> Response:
    return page(request, "admin_token.html", signed, user=user, token=token, what=what)


@router.post("/admin/parties")
def admin_new_party(signed: AdminPage, platform: PlatformDep, name: FormStr = "",
                    csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        identity.create_party(session, name.strip(), actor=signed.caller.actor)
    return back("/admin")


@router.post("/admin/users")
def admin_new_user(request: Request, signed: AdminPage, platform: PlatformDep,
                   name: FormStr = "", role: FormStr = "", party: FormStr = "",
                   csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    try:
        kind = Role(role)
    except ValueError:
        raise identity.IdentityError("role must be provider, consumer or admin") from None
    with platform.db.transaction() as session:
        user, token = identity.create_user(session, name.strip(), role=kind,
                                           party=party.strip() or None,
                                           actor=signed.caller.actor)
        username = user.name
    return _issued(request, signed, username, token, "created")


@router.post("/admin/tokens")
def admin_issue(request: Request, signed: AdminPage, platform: PlatformDep, user: FormStr = "",
                csrf: Csrf = "") -> Response:
    """A further token for an existing user (theirs to use alongside the old ones)."""
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        row, token = identity.new_token(session, identity.user_by_name(session, user),
                                        actor=signed.caller.actor)
        username = row.user.name
    return _issued(request, signed, username, token, "issued")


@router.post("/admin/tokens/{token_id}/revoke")
def admin_revoke(token_id: str, signed: AdminPage, platform: PlatformDep,
                 csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        identity.revoke_token(session, token_id, actor=signed.caller.actor)
    return back("/admin#tokens")


@router.post("/admin/tokens/{token_id}/rotate")
def admin_rotate(request: Request, token_id: str, signed: AdminPage, platform: PlatformDep,
                 csrf: Csrf = "") -> Response:
    check_csrf(signed, csrf)
    with platform.db.transaction() as session:
        old, token = identity.rotate_token(session, token_id, actor=signed.caller.actor)
        username = old.user.name
    return _issued(request, signed, username, token, "rotated")


# -- audit --------------------------------------------------------------------------------

@router.get("/audit")
def audit_page(request: Request, signed: SignedDep, platform: PlatformDep,
               q: Annotated[str, Query(max_length=200)] = "") -> Response:
    """The events about the caller's own datasets and jobs (all of them for an admin)."""
    caller = signed.caller
    needle = q.strip().lower()
    with platform.db.transaction() as session:
        try:
            chain: dict[str, Any] = {"intact": True, "events": audit.verify_chain(session)}
        except audit.AuditChainBroken as broken:
            chain = {"intact": False, "broken_at": broken.seq}
        subjects: set[str] | None = None
        if caller.role is not Role.ADMIN:
            subjects = {j.id for j in service.visible(session, caller)} | {caller.user_id}
            if caller.role is Role.PROVIDER:
                subjects |= {d.id for d in platform.catalog.visible(session, caller)}
        events = []
        query = select(AuditEvent).order_by(AuditEvent.seq.desc())
        for event in session.execute(query).scalars():
            if subjects is not None and event.subject not in subjects \
                    and event.actor != caller.actor:
                continue
            row = {"seq": event.seq, "at": event.at.isoformat(timespec="seconds"),
                   "actor": event.actor, "action": event.action, "subject": event.subject,
                   "detail": render.facts_rows(event.detail)}
            if needle and needle not in " ".join(
                    [event.actor, event.action, event.subject, str(event.detail)]).lower():
                continue
            events.append(row)
            if len(events) >= AUDIT_LIMIT:
                break
    return page(request, "audit.html", signed, chain=chain, events=events, q=q,
                limit=AUDIT_LIMIT)

