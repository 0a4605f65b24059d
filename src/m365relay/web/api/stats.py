"""``GET /stats``: the dashboard's numbers as JSON (``activity.Activity``): per connector, mail accepted /
sent / failed and deferrals per hour over 24 hours and per day over 30 days, the queue, pause periods and
the credential's remaining life. A key bound to one connector sees only that connector."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from ...access.api_keys import ApiKey
from ...activity import Activity, stats_view
from .context import Context, require
from .models import problem_responses

router = APIRouter(tags=["stats"])


@router.get("/stats", summary="Activity per connector", responses=problem_responses(503))
async def get_stats(context: Context, key: Annotated[ApiKey, Depends(require("read"))]) -> dict[str, Any]:
    """`connectors[]`, each with `hours` (24, oldest first; the last is the current, open hour), `days` (30,
    today last), `queue` (`waiting`, `sending`, `oldest_waiting_at`, `oldest_waiting_seconds`), `pauses`
    (`start`, `end` — null while still paused —, `reason`) and `credential` (`expires_at`, `days_left`,
    `lifetime_days`). Counts: `accepted` (entered the outbox), `sent` (Graph answered 202), `failed`
    (dead-lettered), `deferred` (put back for a later attempt: throttling or temporary trouble)."""
    runtime = context.runtime

    def run() -> dict[str, Any]:
        now = runtime.clock.now()
        seen = [c for c in runtime.connectors.all() if key.may_see(c.id)]
        report = Activity(runtime.db, runtime.clock).report(seen)
        return {"generated_at": now.isoformat(), "connectors": [stats_view(item, now) for item in report]}

    return await run_in_threadpool(run)
