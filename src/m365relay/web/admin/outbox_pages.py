"""The outbox: every message the relay accepted, filtered and paged (newest first); one message with its
headers, recipients, events and last error (with the remedy); Retry and Cancel; each connector's state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ...errors import ConflictError, NotFoundError
from ...outbox.recipients import BOUNCED, RecipientState, states_of
from ...outbox.records import PENDING
from ...outbox.records import STATUSES as MESSAGE_STATUSES
from .audit_log import record
from .context import AdminContext, Ctx
from .ui import notice

PAGE_SIZE = 50
STATUSES = (*MESSAGE_STATUSES, BOUNCED)  # bounced: messages with a bounced recipient
MAX_HEADER_CHARS = 64 * 1024  # a header block is a few kB; a pathological one is cut, not streamed into the page
AGES: dict[str, tuple[str, str, timedelta | None]] = {
    "": ("any age", "", None),
    "new:1h": ("last hour", "newer", timedelta(hours=1)),
    "new:24h": ("last 24 hours", "newer", timedelta(days=1)),
    "new:7d": ("last 7 days", "newer", timedelta(days=7)),
    "old:1h": ("older than an hour", "older", timedelta(hours=1)),
    "old:24h": ("older than a day", "older", timedelta(days=1)),
    "old:7d": ("older than a week", "older", timedelta(days=7)),
}

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Filters:
    status: str = ""
    connector: str = ""
    recipient: str = ""
    age: str = ""
    before: int | None = None

    def query(self, **changes: Any) -> str:
        from urllib.parse import urlencode

        values = {"status": self.status, "connector": self.connector, "recipient": self.recipient, "age": self.age}
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def parse_filters(request: Request, connector_ids: set[int]) -> tuple[Filters, list[str]]:
    q = request.query_params
    errors: list[str] = []
    status, connector, age = q.get("status", ""), q.get("connector", ""), q.get("age", "")
    recipient, before = q.get("recipient", "").strip()[:320], q.get("before", "")
    if status and status not in STATUSES:
        errors.append(f"Status {status!r} is not one of {', '.join(STATUSES)}.")
    if connector and not (connector.isdigit() and int(connector) in connector_ids):
        errors.append(f"There is no connector {connector!r}.")
    if age not in AGES:
        errors.append(f"Age {age!r} is not one of the offered choices.")
    if before and not (before.isdigit() and len(before) < 19):
        errors.append(f"The page marker {before!r} is not a message number.")
    return Filters(
        status, connector, recipient, age, int(before) if before.isdigit() and len(before) < 19 else None
    ), errors


@router.get("/admin/outbox", name="admin_outbox")
def outbox_list(request: Request, ctx: Ctx) -> Response:
    runtime = ctx.runtime
    connectors = runtime.connectors.all()
    filters, errors = parse_filters(request, {c.id for c in connectors})
    messages = []
    if not errors:
        _label, direction, delta = AGES[filters.age]
        messages = runtime.outbox.list(
            status=filters.status or None,
            connector_id=int(filters.connector) if filters.connector else None,
            recipient=filters.recipient or None,
            older_than=delta if direction == "older" else None,
            newer_than=delta if direction == "newer" else None,
            before_id=filters.before,
            limit=PAGE_SIZE,
        )
    stats = runtime.outbox.stats()
    return ctx.ui.render(
        "outbox.html",
        ctx,
        status_code=400 if errors else 200,
        messages=messages,
        filters=filters,
        errors=errors,
        connectors=connectors,
        names={c.id: c.name for c in connectors},
        stats=stats,
        statuses=STATUSES,
        ages=AGES,
        next_query=filters.query(before=messages[-1].id) if len(messages) == PAGE_SIZE else None,
        first_query=filters.query() if filters.before is not None else None,
    )


def _recipient_states(runtime: Any, message: Any) -> list[RecipientState]:
    with runtime.db.read() as session:
        return states_of(session, [message])[message.id]


def _message_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


@router.get("/admin/outbox/{message_id}", name="admin_message")
def message_detail(message_id: str, ctx: Ctx) -> Response:
    runtime = ctx.runtime
    number = _message_id(message_id)
    try:
        if number is None:
            raise NotFoundError(f"no message {message_id}")
        message = runtime.outbox.get(number)
        headers = runtime.outbox.headers(number).decode("utf-8", "replace")
    except NotFoundError:
        return ctx.ui.render(
            "error.html",
            ctx,
            status_code=404,
            title="No such message",
            text=f"The outbox has no message {message_id!r} (it may have been purged).",
        )
    connector = runtime.connectors.find(message.connector_id)
    return ctx.ui.render(
        "message.html",
        ctx,
        message=message,
        headers=headers[:MAX_HEADER_CHARS],
        headers_cut=len(headers) > MAX_HEADER_CHARS,
        connector=connector,
        recipients=_recipient_states(runtime, message),
        can_retry=message.status not in ("sent", "sending"),
        can_cancel=message.status in PENDING,
    )


@router.post("/admin/outbox/{message_id}/retry", name="admin_message_retry")
def retry(message_id: str, ctx: Ctx) -> Response:
    return _act(ctx, message_id, "retry")


@router.post("/admin/outbox/{message_id}/cancel", name="admin_message_cancel")
def cancel(message_id: str, ctx: Ctx) -> Response:
    return _act(ctx, message_id, "cancel")


def _act(ctx: AdminContext, raw_id: str, action: str) -> Response:
    outbox = ctx.runtime.outbox
    number = _message_id(raw_id)
    if number is None:
        return RedirectResponse("/admin/outbox", status_code=303)
    try:
        done = outbox.retry(number, actor=ctx.actor) if action == "retry" else outbox.cancel(number, actor=ctx.actor)
    except (ConflictError, NotFoundError) as exc:
        ctx.ui.add_notice(ctx, notice("error", f"Message {number} was not changed", exc.message, remedy=exc.remedy))
    else:
        record(ctx.runtime, ctx.actor, f"message.{action}", str(number), {"status": done.status}, ctx.remote_addr)
        text = "It is queued and will be sent shortly." if action == "retry" else "It will not be sent."
        title = f"Message {number} {'queued again' if action == 'retry' else 'cancelled'}"
        ctx.ui.add_notice(ctx, notice("success", title, text))
    return RedirectResponse(f"/admin/outbox/{number}", status_code=303)
