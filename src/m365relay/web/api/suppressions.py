"""``/suppressions``: the addresses a connector no longer mails after a hard bounce (docs/delivery.md).

Reading needs the ``read`` scope; adding and removing need ``admin`` (a removal lets mail go to an address
that bounced). Every change is written to the audit log with the key that made it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ...access.api_keys import ApiKey
from ...connectors import ConnectorConfig
from .context import ApiContext, Context, require
from .ingest import choose_connector
from .models import ADDRESS_PATTERN, problem_responses

router = APIRouter(tags=["suppressions"])


class SuppressionView(BaseModel):
    id: int
    connector_id: int
    address: str
    status: str | None = Field(description="RFC 3463 status of the bounce that caused it (null when added by hand).")
    diagnostic: str | None
    bounced_at: str
    message_id: int | None = Field(description="The outbox message whose bounce caused the entry.")
    source: str = Field(description="bounce or manual")
    created_at: str
    expires_at: str | None


class SuppressionPage(BaseModel):
    items: list[SuppressionView]


class SuppressionIn(BaseModel):
    address: str = Field(max_length=320, pattern=ADDRESS_PATTERN)
    connector: str | None = Field(None, max_length=64)
    reason: str | None = Field(None, max_length=500)
    days: int | None = Field(None, ge=1, le=3650, description="Default: M365RELAY_SUPPRESSION_DAYS (30).")


def _connector(context: ApiContext, key: ApiKey, name: str | None) -> ConnectorConfig:
    return choose_connector(context, key, name)


@router.get(
    "/suppressions", response_model=SuppressionPage, summary="List suppressions", responses=problem_responses(404, 422)
)
async def list_suppressions(
    context: Context,
    key: Annotated[ApiKey, Depends(require("read"))],
    connector: Annotated[str | None, Query(max_length=64)] = None,
) -> SuppressionPage:
    def run() -> SuppressionPage:
        connector_id = _connector(context, key, connector).id if connector or key.connector_id else None
        entries = context.runtime.suppressions.list(connector_id)
        return SuppressionPage(items=[SuppressionView.model_validate(e.view()) for e in entries])

    return await run_in_threadpool(run)


@router.post(
    "/suppressions",
    status_code=201,
    response_model=SuppressionView,
    summary="Suppress an address",
    responses=problem_responses(404, 422),
)
async def add_suppression(
    body: SuppressionIn, context: Context, key: Annotated[ApiKey, Depends(require("admin"))]
) -> SuppressionView:
    def run() -> SuppressionView:
        found = _connector(context, key, body.connector)
        entry = context.runtime.suppressions.add(
            found.id, body.address, actor=f"api:{key.name}", reason=body.reason, days=body.days
        )
        return SuppressionView.model_validate(entry.view())

    return await run_in_threadpool(run)


@router.delete(
    "/suppressions",
    response_model=SuppressionView,
    summary="Remove an address from the suppression list",
    responses=problem_responses(404, 422),
)
async def remove_suppression(
    context: Context,
    key: Annotated[ApiKey, Depends(require("admin"))],
    address: Annotated[str, Query(max_length=320)],
    connector: Annotated[str | None, Query(max_length=64)] = None,
) -> SuppressionView:
    def run() -> SuppressionView:
        found = _connector(context, key, connector)
        entry = context.runtime.suppressions.remove(found.id, address, actor=f"api:{key.name}")
        return SuppressionView.model_validate(entry.view())

    return await run_in_threadpool(run)
