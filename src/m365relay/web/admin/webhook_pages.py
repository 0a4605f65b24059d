"""The Webhooks page (``/admin/webhooks``): each endpoint with its state and deliveries; add one (its
secret is shown on the answer page, once — never stored in the session, never shown again); send a test
event; replay recent events; remove. The same validation as the CLI and the API (events/endpoints.py);
every change is in the audit log."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ...errors import NotFoundError, ValidationError
from ...events.delivery import send_test
from ...events.endpoints import check_url
from ...events.kinds import EVENT_TYPES
from .audit_log import record
from .context import AdminContext, Ctx
from .ui import notice

router = APIRouter(include_in_schema=False)
PAGE = "/admin/webhooks"
REPLAY_WINDOWS = {"1h": ("the last hour", timedelta(hours=1)), "24h": ("the last 24 hours", timedelta(days=1)),
                  "3d": ("the last 3 days", timedelta(days=3))}  # fmt: skip


def _page(ctx: AdminContext, *, status_code: int = 200, **values: object) -> Response:
    store = ctx.runtime.webhooks
    values.setdefault("form", {"url": "", "events": list(EVENT_TYPES), "connector": "default"})
    return ctx.ui.render(
        "webhooks.html",
        ctx,
        status_code=status_code,
        endpoints=store.list(),
        counts=store.counts(),
        connectors=ctx.runtime.connectors.all(),
        event_types=EVENT_TYPES,
        windows=REPLAY_WINDOWS,
        **values,
    )


@router.get(PAGE, name="admin_webhooks")
def webhooks_page(ctx: Ctx) -> Response:
    return _page(ctx)


@router.post(PAGE, name="admin_webhook_add")
def add(ctx: Ctx) -> Response:
    assert ctx.form is not None
    events = [v for v in ctx.form.getlist("events") if isinstance(v, str)]
    url, connector = ctx.field("url"), ctx.field("connector")
    form = {"url": url, "events": events, "connector": connector}
    errors: dict[str, str] = {} if events else {"events": "choose at least one event"}
    try:
        if errors:  # the store takes "no events" as "all"; here an empty choice is a mistake
            check_url(url)
        else:
            issued = ctx.runtime.webhooks.add(
                url, events, connector or None, actor=ctx.actor, remote_addr=ctx.remote_addr
            )
    except ValidationError as exc:
        errors.update({e.key: e.reason for e in exc.all_errors})
    if errors:
        return _page(ctx, status_code=400, form=form, errors=errors)
    return _page(ctx, status_code=201, issued=issued)


@router.post(PAGE + "/{raw_id}/test", name="admin_webhook_test")
async def test(raw_id: str, ctx: Ctx) -> Response:
    runtime = ctx.runtime
    try:
        endpoint_id = _number(raw_id)
        result = await send_test(runtime.webhooks, endpoint_id, runtime.settings, clock=runtime.clock)
    except NotFoundError as exc:
        ctx.ui.add_notice(ctx, notice("error", "Not sent", exc.message))
        return RedirectResponse(PAGE, status_code=303)
    detail = {"ok": result.ok, "status": result.status, "error": result.error}
    await asyncio.to_thread(record, runtime, ctx.actor, "webhook.test", str(endpoint_id), detail, ctx.remote_addr)
    kind, title = ("success", "Test event delivered") if result.ok else ("error", "Test event not delivered")
    ctx.ui.add_notice(ctx, notice(kind, f"{title} (endpoint {endpoint_id})", result.text))
    return RedirectResponse(PAGE, status_code=303)


@router.post(PAGE + "/{raw_id}/replay", name="admin_webhook_replay")
def replay(raw_id: str, ctx: Ctx) -> Response:
    window = REPLAY_WINDOWS.get(ctx.field("since"))
    if window is None:
        ctx.ui.add_notice(ctx, notice("error", "Nothing replayed", "Choose one of the offered time windows."))
        return RedirectResponse(PAGE, status_code=303)
    try:
        endpoint_id = _number(raw_id)
        count = ctx.runtime.webhooks.replay(
            endpoint_id, since=ctx.runtime.clock.now() - window[1], actor=ctx.actor, remote_addr=ctx.remote_addr
        )
    except NotFoundError as exc:
        ctx.ui.add_notice(ctx, notice("error", "Nothing replayed", exc.message))
    else:
        text = f"{count} event(s) of {window[0]} are queued again, with their original webhook-id."
        ctx.ui.add_notice(ctx, notice("success", f"Replaying endpoint {endpoint_id}", text))
    return RedirectResponse(PAGE, status_code=303)


@router.post(PAGE + "/{raw_id}/remove", name="admin_webhook_remove")
async def remove(raw_id: str, ctx: Ctx) -> Response:
    try:
        endpoint_id = _number(raw_id)
        endpoint = await run_in_threadpool(
            ctx.runtime.webhooks.remove, endpoint_id, actor=ctx.actor, remote_addr=ctx.remote_addr
        )
    except NotFoundError as exc:
        ctx.ui.add_notice(ctx, notice("error", "Not removed", exc.message))
    else:
        text = f"{endpoint.shown_url} receives no more events; its undelivered events were dropped."
        ctx.ui.add_notice(ctx, notice("success", f"Endpoint {endpoint_id} removed", text))
    return RedirectResponse(PAGE, status_code=303)


def _number(raw: str) -> int:
    """An endpoint id from the address; anything else names no endpoint (a page, not a 422)."""
    if not (raw.isdigit() and len(raw) < 10):
        raise NotFoundError(f"no webhook endpoint {raw[:20]!r}")
    return int(raw)
