"""``/webhooks``: endpoints that receive message events, signed per Standard Webhooks (docs/api.md, "Events
and webhooks"). Scope ``admin``: an endpoint receives every event of its connector.

``POST`` answers the signing secret once (``secret``); no other answer carries it, and listed URLs have
their credentials and query masked. Validation is the CLI's and the admin page's (events/endpoints.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from ...access.api_keys import ApiKey
from ...events.delivery import send_test
from ...events.kinds import EVENT_TYPES
from .context import Context, require
from .ingest import choose_connector
from .models import problem_responses

router = APIRouter(tags=["webhooks"])
Admin = Annotated[ApiKey, Depends(require("admin"))]
MAX_REPLAY_SECONDS = 31 * 86_400
EndpointId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The endpoint's id.")]


EVENT_PATTERN = f"^(all|(message\\.)?({'|'.join(EVENT_TYPES)}))$"


class WebhookCreate(BaseModel):
    url: str = Field(
        description="The http:// or https:// URL that receives the events.",
        max_length=2048,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]+",
    )
    events: list[Annotated[str, StringConstraints(pattern=EVENT_PATTERN)]] | None = Field(
        None, description=f"Any of {', '.join(EVENT_TYPES)} (or `all`); omitted or empty: all."
    )
    connector: str | None = Field(None, description="Whose events (default: `default`).", max_length=64)


class WebhookView(BaseModel):
    id: int
    connector: str
    url: str = Field(description="As entered, with credentials and the query masked.")
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    failing_since: str | None
    last_success_at: str | None
    last_failure_at: str | None
    last_error: str | None
    created_at: str
    deliveries: dict[str, int] = Field(default_factory=dict, description="Deliveries by status.")


class WebhookCreated(WebhookView):
    secret: str = Field(description="The signing secret (whsec_…). Shown in this answer only: store it now.")


class WebhookList(BaseModel):
    items: list[WebhookView]


class WebhookReplay(BaseModel):
    since_seconds: int = Field(86_400, ge=1, le=MAX_REPLAY_SECONDS, description="Replay events of this last while.")
    # A bound doubles hold exactly: fuzzers compare as doubles, so 2**63 - 1 (or 2**62) admits larger numbers.
    delivery_id: int | None = Field(None, ge=1, le=10**15, description="Replay only this delivery.")


class ReplayResult(BaseModel):
    endpoint: int
    requeued: int


class TestOutcome(BaseModel):
    ok: bool
    status: int | None
    error: str | None
    webhook_id: str


@router.get("/webhooks", response_model=WebhookList, summary="List webhook endpoints", responses=problem_responses())
async def list_webhooks(context: Context, _key: Admin) -> WebhookList:
    store = context.runtime.webhooks

    def run() -> WebhookList:
        counts = store.counts()
        return WebhookList(items=[_view(e.public_view(), counts.get(e.id, {})) for e in store.list()])

    return await run_in_threadpool(run)


@router.post(
    "/webhooks", status_code=201, response_model=WebhookCreated, summary="Add a webhook endpoint",
    responses=problem_responses(404, 422),
)  # fmt: skip
async def add_webhook(body: WebhookCreate, context: Context, key: Admin) -> WebhookCreated:
    """The answer's `secret` is the only copy there will be."""
    if body.connector is not None:  # a connector that does not exist is a 404, as for sending
        await run_in_threadpool(choose_connector, context, key, body.connector)
    issued = await run_in_threadpool(
        context.runtime.webhooks.add, body.url, body.events, body.connector, actor=f"api:{key.label}"
    )
    return WebhookCreated(**issued.endpoint.public_view(), secret=issued.secret)


@router.delete(
    "/webhooks/{endpoint_id}", status_code=204, summary="Remove a webhook endpoint", responses=problem_responses(404)
)
async def remove_webhook(endpoint_id: EndpointId, context: Context, key: Admin) -> Response:
    await run_in_threadpool(context.runtime.webhooks.remove, endpoint_id, actor=f"api:{key.label}")
    return Response(status_code=204)


@router.post(
    "/webhooks/{endpoint_id}/test", response_model=TestOutcome, summary="Send a signed test event",
    responses=problem_responses(404),
)  # fmt: skip
async def test_webhook(endpoint_id: EndpointId, context: Context, _key: Admin) -> TestOutcome:
    """Sent now, outside the queue; `ok` is true when the endpoint answered 2xx within the timeout."""
    runtime = context.runtime
    result = await send_test(runtime.webhooks, endpoint_id, runtime.settings, clock=runtime.clock)
    return TestOutcome(ok=result.ok, status=result.status, error=result.error, webhook_id=result.webhook_id)


@router.post(
    "/webhooks/{endpoint_id}/replay", response_model=ReplayResult, summary="Replay events",
    responses=problem_responses(404, 422),
)  # fmt: skip
async def replay_webhook(
    endpoint_id: EndpointId, context: Context, key: Admin, body: WebhookReplay | None = None
) -> ReplayResult:
    """Queue the endpoint's events again, with their original `webhook-id`; a disabled endpoint is enabled."""
    request = body or WebhookReplay()
    runtime = context.runtime
    since = None if request.delivery_id is not None else runtime.clock.now() - timedelta(seconds=request.since_seconds)
    count = await run_in_threadpool(
        runtime.webhooks.replay, endpoint_id, since=since, delivery_id=request.delivery_id, actor=f"api:{key.label}"
    )
    return ReplayResult(endpoint=endpoint_id, requeued=count)


def _view(data: dict[str, Any], counts: dict[str, int]) -> WebhookView:
    return WebhookView(**data, deliveries=counts)
