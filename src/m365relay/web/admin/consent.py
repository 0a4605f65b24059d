"""Grant admin consent (the manual's last step: "The Administrator must grant these permissions").

The button makes the v2.0 ``adminconsent`` link for the connector's cloud and tenant (``lifecycle.consent``)
with a fresh ``state``, keeps that state in this session, and sends the browser to Microsoft. Microsoft
returns to the Redirect URL (``/admin/connectors/SMTP.aspx``) with ``admin_consent``/``error`` and the
``state`` (PROTOCOL.md §4). The answer counts only if its state is the one this session is waiting for
(single use, at most 24 hours old); the returned ``tenant`` is never trusted. A grant is then confirmed the
only way it can be: a fresh token whose ``roles`` carry Mail.Send (the doctor's check 5).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ...clouds import DEFAULT_GRAPH_RESOURCE
from ...connectors import DEFAULT_NAME, ConnectorConfig
from ...doctor import CheckResult
from ...doctor.token import token_checks
from ...errors import ValidationError
from ...lifecycle import admin_consent_url, consent_redirect_uri, consent_state, read_consent_state
from .audit_log import record
from .connector_view import NAMED, PAGE, page_url
from .context import AdminContext, Ctx
from .ui import notice

CALLBACK_PARAMS = ("admin_consent", "error", "state")
MAX_PARAM = 2000  # Microsoft's answers are short; anything longer is cut before it is shown or recorded

router = APIRouter(include_in_schema=False)

# What Microsoft's consent errors mean for the administrator (learn.microsoft.com/entra/identity-platform/
# reference-error-codes). Keyed by AADSTS number; the OAuth ``error`` value is the fallback.
BY_CODE: dict[str, tuple[str, str, str]] = {
    "65004": (
        "Consent was declined",
        "The administrator chose Cancel on Microsoft's consent page, so nothing was granted.",
        "Click Grant admin consent again and choose Accept.",
    ),
    "90094": (
        "An administrator must grant this",
        "The account that signed in at Microsoft may not grant consent for the whole organisation.",
        "Sign in there as a Global Administrator (or Privileged Role / Cloud Application Administrator), or ask "
        "one to click Grant admin consent on the app's API permissions page in the Azure portal.",
    ),
    "650056": (
        "The app asks for no permissions",
        "The app registration has no API permission to consent to.",
        "In the Azure portal open the app › API permissions › Add a permission › Microsoft Graph › Application "
        "permissions › Mail.Send, then grant consent again.",
    ),
    "700016": (
        "The app was not found",
        "Microsoft did not find this OAuth Client ID in the tenant.",
        "Check the OAuth Client ID (Application (client) ID) and Tenant ID (Directory (tenant) ID) on the app's "
        "Overview page, save them, and try again.",
    ),
    "90002": (
        "The tenant was not found",
        "Microsoft does not know this Tenant ID in the connector's cloud.",
        "Check the Tenant ID and the cloud setting, save them, and try again.",
    ),
    "500011": (
        "The app asked for an unknown resource",
        "Microsoft does not know the resource in the consent request's scope: a custom cloud's Graph resource "
        "was probably set to a proxy's URL instead of Microsoft Graph's.",
        f"Set Graph resource to {DEFAULT_GRAPH_RESOURCE} (or your national cloud's Graph), save, and try again.",
    ),
    "50011": (
        "The Redirect URL is not registered",
        "The app registration does not list this page's Redirect URL exactly.",
        "In the Azure portal open the app › Authentication › Web › Redirect URIs, add the Redirect URL shown on "
        "this page exactly, save, and try again.",
    ),
}
BY_ERROR: dict[str, tuple[str, str, str]] = {
    "access_denied": (
        "Consent was not granted",
        "The request was cancelled or refused at Microsoft.",
        "Click Grant admin consent again; sign in there as a Global Administrator and choose Accept.",
    ),
    "permission_denied": BY_CODE["65004"],
    "consent_required": (
        "Consent was not granted",
        "Microsoft answered that consent is still required.",
        "Click Grant admin consent again and choose Accept, as a Global Administrator.",
    ),
    "temporarily_unavailable": (
        "Microsoft could not complete the request",
        "The Microsoft sign-in service was temporarily unavailable.",
        "Try again in a few minutes.",
    ),
    "server_error": (
        "Microsoft could not complete the request",
        "The Microsoft sign-in service had an internal error.",
        "Try again in a few minutes.",
    ),
}


@dataclass(frozen=True)
class Answer:
    connector: ConnectorConfig | None
    refused: str = ""  # why the answer was not accepted (state problems)


@router.post(f"{PAGE}/consent", name="admin_consent_start")
def start_consent(ctx: Ctx) -> Response:
    return _start(ctx, DEFAULT_NAME)


@router.post(NAMED + "/{name}/consent", name="admin_consent_start_named")
def start_consent_named(name: str, ctx: Ctx) -> Response:
    """Any connector's consent returns to the same registered Redirect URL; the state names the connector."""
    return _start(ctx, name)


def _start(ctx: AdminContext, name: str) -> Response:
    runtime = ctx.runtime
    connector = runtime.connectors.find(name)
    if connector is None:
        ctx.ui.add_notice(
            ctx,
            notice(
                "error",
                "Save the connector first",
                "Admin consent is granted to an app: enter the OAuth Client ID and Tenant ID and Save first.",
                section="consent",
            ),
        )
        return RedirectResponse(f"{page_url(name)}#consent", status_code=303)
    now = runtime.clock.now()
    state = consent_state(runtime.box, connector, now)
    ctx.ui.update_data(ctx, consent={"state": state, "connector": connector.id, "started": now.isoformat()})
    url = admin_consent_url(connector, consent_redirect_uri(runtime.settings), state)
    return RedirectResponse(url, status_code=303)


async def consent_callback(request: Request, ctx: AdminContext) -> Response:
    params = {k: (request.query_params.get(k) or "")[:MAX_PARAM] for k in (*CALLBACK_PARAMS, "error_description")}
    answer = await run_in_threadpool(_match_state, ctx, params["state"])
    connector = answer.connector
    if connector is None:
        await run_in_threadpool(_refused, ctx, answer.refused, params)
    elif params["error"]:
        await run_in_threadpool(_failed, ctx, connector, params["error"], params["error_description"])
    else:
        confirmation = await _confirm(ctx, connector)
        await run_in_threadpool(_granted, ctx, connector, confirmation)
    return RedirectResponse(f"{page_url(connector.name if connector else DEFAULT_NAME)}#consent", status_code=303)


def _match_state(ctx: AdminContext, state: str) -> Answer:
    """Only the answer carrying this session's state uses up the pending consent: any other GET with the
    callback's parameters (a forged link, a stale tab) is refused and leaves the real request waiting."""
    pending: dict[str, Any] | None = ctx.session.data.get("consent")
    if not state:
        return Answer(None, "Microsoft's answer carried no state, so it cannot be tied to a request made here.")
    if pending is None:
        return Answer(
            None,
            "No admin consent was started from this session (or this answer was already used), so the answer "
            "cannot be tied to a request made here.",
        )
    if not hmac.compare_digest(state.encode(), str(pending.get("state", "")).encode()):
        return Answer(
            None,
            "The answer's state does not match the consent request started in this session; it may come from "
            "another browser or a forged link.",
        )
    ctx.ui.update_data(ctx, consent=None)  # single use: a replayed answer finds nothing to match
    runtime = ctx.runtime
    try:
        connector_id = read_consent_state(runtime.box, state, runtime.clock.now())
    except ValidationError as exc:
        return Answer(None, f"The answer's state {exc.reason}.")
    connector = runtime.connectors.find(connector_id)
    if connector is None:
        return Answer(None, "The connector consent was requested for no longer exists.")
    return Answer(connector)


def _refused(ctx: AdminContext, reason: str, params: dict[str, str]) -> None:
    detail = {"outcome": "refused", "reason": reason[:200], "error": params["error"][:64] or None}
    record(ctx.runtime, ctx.actor, "connector.consent_refused", DEFAULT_NAME, detail, ctx.remote_addr)
    ctx.ui.add_notice(
        ctx,
        notice(
            "error",
            "Microsoft's answer was not accepted",
            f"{reason} Nothing was recorded.",
            remedy="Start again with Grant admin consent on this page. If consent was granted at Microsoft anyway, "
            "Test connection shows it: it reads the permissions in a fresh token.",
            section="consent",
        ),
    )


def describe_error(error: str, description: str) -> tuple[str, str, str, str | None]:
    """(title, text, remedy, AADSTS code) in plain words for Microsoft's error answer."""
    found = re.search(r"AADSTS(\d+)", description)
    code = found.group(1) if found else None
    title, text, remedy = (
        BY_CODE.get(code or "")
        or BY_ERROR.get(error)
        or (
            "Consent was not granted",
            f"Microsoft answered {error!r}.",
            "Click Grant admin consent again. If it keeps failing, the text below is what Microsoft said.",
        )
    )
    said = description.replace("+", " ").splitlines()[0][:300] if description.strip() else ""
    if said:
        text = f"{text} Microsoft said: {said}"
    return title, text, remedy, f"AADSTS{code}" if code else None


def _failed(ctx: AdminContext, connector: ConnectorConfig, error: str, description: str) -> None:
    title, text, remedy, code = describe_error(error, description)
    outcome = "declined" if code == "AADSTS65004" or error == "permission_denied" else "error"
    detail = {"outcome": outcome, "error": error[:64], "code": code}
    record(ctx.runtime, ctx.actor, "connector.consent", connector.name, detail, ctx.remote_addr)
    ctx.ui.add_notice(ctx, notice("error", title, text, remedy=remedy, section="consent"))


async def _confirm(ctx: AdminContext, connector: ConnectorConfig) -> CheckResult | None:
    """Check 5 on a fresh token (None without a stored credential: nothing to ask a token with)."""
    if connector.credential is None:
        return None
    runtime = ctx.runtime
    target = runtime.settings.effective_public_base_url + page_url(connector.name) + "#consent"
    outcome = await token_checks(runtime, connector, runtime.clock.now(), None, target)
    if outcome.permission.status != "skip":
        return outcome.permission
    # No token: say why (the app or the credential check failed first).
    return next((r for r in (outcome.tenant, outcome.app, outcome.credential) if r and r.status == "fail"), None)


def _granted(ctx: AdminContext, connector: ConnectorConfig, check: CheckResult | None) -> None:
    runtime = ctx.runtime
    roles = list(check.data.get("roles", [])) if check is not None else []
    confirmed = check is not None and check.id == "permission" and "Mail.Send" in roles
    detail = {"outcome": "granted", "mail_send": confirmed if check is not None else None, "roles": roles}
    runtime.connectors.record_consent(connector.id, actor=ctx.actor, detail=detail, remote_addr=ctx.remote_addr)
    if confirmed and connector.paused:
        runtime.connectors.set_next_probe(connector.id, runtime.clock.now())  # the waiting mail goes out now
    if check is None:
        shown = notice(
            "info",
            "Admin consent granted",
            "Microsoft reported the consent as granted. No secret is stored yet, so it cannot be confirmed.",
            remedy="Store the client secret, then run Test connection: it checks Mail.Send in a fresh token.",
            section="consent",
        )
    elif confirmed:
        shown = notice(
            "success",
            "Admin consent granted",
            f"Confirmed: a fresh token for app {connector.client_id} carries {', '.join(roles)}.",
            remedy=check.remedy if check.status == "warn" else "",
            section="consent",
            check=_check_view(check),
        )
    else:
        shown = notice(
            "warning",
            "Consent reported, but Mail.Send is not in the token yet",
            check.detail,
            remedy=(check.remedy + " " if check.remedy else "")
            + "New permissions can take a few minutes to reach tokens: run Test connection again shortly.",
            section="consent",
            check=_check_view(check),
        )
    ctx.ui.add_notice(ctx, shown)


def _check_view(check: CheckResult) -> dict[str, Any]:
    return {"title": check.title, "status": check.status, "detail": check.detail, "remedy": check.remedy}
