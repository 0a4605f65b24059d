"""The overview (``/admin/``), the audit log, and the page for addresses that name nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ...activity import Activity, ConnectorActivity, stats_view
from ...connectors.expiry import expiry_state
from ...outbox.recipients import WARN_RATE, BounceRate, bounce_rates
from .audit_log import KINDS, PAGE_SIZE, entries
from .charts import Bucket, activity_chart, countdown, legend
from .connector_view import credential_line, page_url
from .context import Ctx

router = APIRouter(include_in_schema=False)
fallback = APIRouter(include_in_schema=False)  # joined last: it matches every other /admin/ path


@router.get("/admin/", name="admin_home")
def overview(ctx: Ctx) -> Response:
    runtime = ctx.runtime
    now = runtime.clock.now()
    all_connectors = runtime.connectors.all()
    connectors = [
        {
            "connector": c,
            "page": page_url(c.name),
            "credential": credential_line(c.credential, now),
            "expiry": expiry_state(c, now),
        }
        for c in all_connectors
    ]
    activity = [dashboard_view(item, now) for item in Activity(runtime.db, runtime.clock).report(all_connectors)]
    return ctx.ui.render(
        "overview.html",
        ctx,
        connectors=connectors,
        stats=runtime.outbox.stats(),
        activity=activity,
        legend=legend(),
        bounces=_bounce_rates(ctx),
    )


def dashboard_view(item: ConnectorActivity, now: datetime) -> dict[str, Any]:
    """One connector's charts (SVG), its numbers (for the tables) and its queue, for the overview."""
    data = stats_view(item, now)
    hours = [
        Bucket(f"{h.start:%H}" if i % 3 == 0 else "", f"{h.start:%Y-%m-%d %H}:00", h) for i, h in enumerate(item.hours)
    ]
    days = [Bucket(f"{d.start:%m-%d}" if i % 5 == 0 else "", f"{d.start:%Y-%m-%d}", d) for i, d in enumerate(item.days)]
    span_hours = (item.hours[0].start, item.hours[-1].start + timedelta(hours=1))
    span_days = (item.days[0].start, item.days[-1].start + timedelta(days=1))
    name = item.connector.name
    cred = data["credential"]
    return {
        "data": data,
        "item": item,
        "page": page_url(name),
        "oldest_age": _age(now - item.oldest_waiting_at) if item.oldest_waiting_at else None,
        "chart_hours": activity_chart(f"{name}: messages per hour, last 24 hours", hours, item.pauses, span_hours),
        "chart_days": activity_chart(f"{name}: messages per day, last 30 days", days, item.pauses, span_days),
        "countdown": countdown(cred["days_left"], cred["lifetime_days"], (cred["expires_at"] or "")[:10]),
    }


def _age(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def _bounce_rates(ctx: Ctx) -> dict[int, dict[str, Any]]:
    """Per connector, the bounce rate over 24 hours and 7 days, and whether it passes 5 % (docs/delivery.md)."""
    now = datetime.now(UTC)
    with ctx.runtime.db.read() as session:
        day, week = bounce_rates(session, now - timedelta(days=1)), bounce_rates(session, now - timedelta(days=7))
    empty = BounceRate(0, 0)
    return {
        cid: {"day": day.get(cid, empty), "week": week.get(cid, empty), "warn": WARN_RATE}
        for cid in set(day) | set(week)
    }


@router.get("/admin/audit", name="admin_audit")
def audit_page(request: Request, ctx: Ctx) -> Response:
    kind, before = request.query_params.get("kind", ""), request.query_params.get("before", "")
    errors = []
    if kind not in KINDS:
        errors.append(f"{kind!r} is not one of the offered choices.")
        kind = ""
    if before and not (before.isdigit() and len(before) < 19):
        errors.append(f"The page marker {before!r} is not an entry number.")
        before = ""
    found = [] if errors else entries(ctx.runtime, kind=kind, before_id=int(before) if before else None)
    more = len(found) == PAGE_SIZE
    return ctx.ui.render(
        "audit.html",
        ctx,
        status_code=400 if errors else 200,
        entries=found,
        kinds=KINDS,
        kind=kind,
        errors=errors,
        next_before=found[-1].id if more else None,
        paged=bool(before),
    )


@fallback.api_route("/admin/{rest:path}", methods=["GET", "POST"], name="admin_not_found")
def not_found(rest: str, ctx: Ctx) -> Response:
    return ctx.ui.render(
        "error.html",
        ctx,
        status_code=404,
        title="Page not found",
        text="There is no admin page at this address.",
    )
