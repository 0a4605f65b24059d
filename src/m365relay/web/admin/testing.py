"""Test connection (the doctor's six checks, in the manual's order) and Send test email (a real message
through Microsoft Graph from the connector's mailbox, with Graph's request id). Both reuse the doctor, so
the page, ``m365relay doctor`` and ``/api/v1/connectors/{id}/checks`` say the same things."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ...connectors import DEFAULT_NAME, ConnectorConfig
from ...doctor import CheckResult, run_checks
from ...doctor.mailbox import check_mailbox, test_address
from ...errors import ValidationError
from .audit_log import record
from .connector_page import not_found, render_page
from .connector_view import NAMED, PAGE, page_url
from .context import AdminContext, Ctx
from .ui import STATUS_LABELS, notice

router = APIRouter(include_in_schema=False)


def check_view(check: CheckResult, target: str) -> dict[str, Any]:
    """A check as the page lists it. The doctor's remedies point at a consent link of their own; on this page
    the Grant admin consent button is the way (its answer must match this session)."""
    link = str(check.data.get("consent_url") or "")
    remedy = check.remedy.replace(link, target) if link else check.remedy
    return {
        "number": check.number,
        "id": check.id,
        "title": check.title,
        "status": check.status,
        "label": STATUS_LABELS[check.status],
        "detail": check.detail,
        "remedy": remedy,
        "request_id": check.data.get("request_id"),
        "consent": check.id == "permission" and check.status == "fail",
    }


def _address(
    ctx: AdminContext, request: Request, name: str, *, required: bool, connector: str = DEFAULT_NAME
) -> tuple[str | None, Response | None]:
    """The typed address (validated) or the page with the error next to the field."""
    typed = ctx.field(name).strip()
    if not typed and not required:
        return None, None
    try:
        return test_address(typed), None
    except ValidationError:
        message = (
            "Type the address the test message should go to, e.g. you@contoso.com"
            if not typed
            else f"{typed!r} is not one e-mail address (e.g. you@contoso.com)"
        )
        page = render_page(
            ctx, request, extra_errors={name: message}, typed={name: typed}, status_code=422, name=connector
        )
        return None, page


def _connector_or_notice(ctx: AdminContext, section: str, name: str = DEFAULT_NAME) -> ConnectorConfig | None:
    connector = ctx.runtime.connectors.find(name)
    if connector is None:
        ctx.ui.add_notice(
            ctx,
            notice("error", "Nothing to test yet", "Enter the connector's settings and Save first.", section=section),
        )
    return connector


@router.post(f"{PAGE}/test", name="admin_test_connection")
async def test_connection(request: Request, ctx: Ctx) -> Response:
    return await _test_connection(request, ctx, DEFAULT_NAME)


@router.post(NAMED + "/{name}/test", name="admin_test_connection_named")
async def test_connection_named(name: str, request: Request, ctx: Ctx) -> Response:
    if await run_in_threadpool(ctx.runtime.connectors.find, name) is None:
        return await run_in_threadpool(not_found, ctx, name)
    return await _test_connection(request, ctx, name)


async def _test_connection(request: Request, ctx: AdminContext, name: str) -> Response:
    to, page = await run_in_threadpool(_address, ctx, request, "send_test_to", required=False, connector=name)
    if page is not None:
        return page
    connector = await run_in_threadpool(_connector_or_notice, ctx, "test", name)
    if connector is not None:
        results = await run_checks(ctx.runtime, connector, send_test_to=to)
        await run_in_threadpool(_report_checks, ctx, connector, results, to)
    return RedirectResponse(f"{page_url(name)}#test", status_code=303)


def _report_checks(ctx: AdminContext, connector: ConnectorConfig, results: list[CheckResult], to: str | None) -> None:
    statuses = {r.id: r.status for r in results}
    record(ctx.runtime, ctx.actor, "connector.test", connector.name, {"results": statuses, "to": to}, ctx.remote_addr)
    failed = [r for r in results if r.status == "fail"]
    consent_url = ctx.runtime.settings.effective_public_base_url + page_url(connector.name) + "#consent"
    if failed:
        title = f"{len(failed)} of {len(results)} checks failed"
        kind = "error"
    elif any(r.status == "warn" for r in results):
        title, kind = "The connector works, with warnings", "warning"
    else:
        title, kind = "Everything checked passed", "success"
    now = ctx.runtime.clock.now()
    said = f"Tested at {now.strftime('%Y-%m-%d %H:%M UTC')}."
    if connector.paused and not failed:
        # The fix is in: let the dispatcher try the waiting mail now instead of at its next probe.
        ctx.runtime.connectors.set_next_probe(connector.id, now)
        said += " The connector was paused; its waiting mail is tried again now."
    checks = [check_view(r, consent_url) for r in results]
    ctx.ui.add_notice(ctx, notice(kind, title, said, section="test", checks=checks))


@router.post(f"{PAGE}/send-test", name="admin_send_test")
async def send_test_email(request: Request, ctx: Ctx) -> Response:
    return await _send_test(request, ctx, DEFAULT_NAME)


@router.post(NAMED + "/{name}/send-test", name="admin_send_test_named")
async def send_test_named(name: str, request: Request, ctx: Ctx) -> Response:
    if await run_in_threadpool(ctx.runtime.connectors.find, name) is None:
        return await run_in_threadpool(not_found, ctx, name)
    return await _send_test(request, ctx, name)


async def _send_test(request: Request, ctx: AdminContext, name: str) -> Response:
    to, page = await run_in_threadpool(_address, ctx, request, "to", required=True, connector=name)
    if page is not None:
        return page
    assert to is not None
    connector = await run_in_threadpool(_connector_or_notice, ctx, "send", name)
    if connector is not None:
        result = await check_mailbox(ctx.runtime, connector, to)
        await run_in_threadpool(_report_send, ctx, connector, result, to)
    return RedirectResponse(f"{page_url(name)}#send", status_code=303)


def _report_send(ctx: AdminContext, connector: ConnectorConfig, result: CheckResult, to: str) -> None:
    request_id = result.data.get("request_id")
    detail = {"to": to, "outcome": "sent" if result.status == "pass" else "failed", "request_id": request_id}
    if result.status != "pass":
        detail["code"] = result.data.get("code")
    record(ctx.runtime, ctx.actor, "connector.test_email", connector.name, detail, ctx.remote_addr)
    if result.status == "pass":
        shown = notice(
            "success",
            f"Test email sent to {to}",
            f"Microsoft Graph accepted it from {connector.user_name}. Graph queues mail, so check that it arrives.",
            section="send",
            request_id=request_id,
        )
    else:
        shown = notice(
            "error",
            f"The test email to {to} was not sent",
            result.detail,
            remedy=result.remedy,
            section="send",
            request_id=request_id,
        )
    ctx.ui.add_notice(ctx, shown)
