"""``GET /connectors``: each connector's state (active, or paused with the reason and the remedy) and how
long its credential has left. Never a secret value: ``ConnectorConfig.public_view`` holds none."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from ...access.api_keys import ApiKey
from ...connectors import ConnectorConfig
from ...connectors.expiry import expiry_state
from .context import Context, require
from .models import ConnectorList, ConnectorView, problem_responses

router = APIRouter(tags=["connectors"])


@router.get("/connectors", response_model=ConnectorList, summary="List connectors", responses=problem_responses(503))
async def get_connectors(context: Context, key: Annotated[ApiKey, Depends(require("read"))]) -> ConnectorList:
    """Whether each connector sends (`active`) or waits for an administrator (`paused`, with `state_reason` and
    `state_remedy`; an active connector has them while some of its mail waits for a permission), and its
    credential's expiry (`expiry.level`: ok, warning from 30 days, critical from 7,
    expired). A key bound to one connector sees that connector only."""
    runtime = context.runtime

    def run() -> ConnectorList:
        now = runtime.clock.now()
        visible = [c for c in runtime.connectors.all() if key.connector_id is None or c.id == key.connector_id]
        return ConnectorList(items=[connector_view(c, now) for c in visible])

    return await run_in_threadpool(run)


def connector_view(connector: ConnectorConfig, now: datetime) -> ConnectorView:
    state = expiry_state(connector, now)
    data = connector.public_view(now)
    data["expiry"] = {
        "level": state.level,
        "days_left": state.days_left,
        "seconds_left": state.seconds_left,
        "expires_at": state.expires_at.isoformat() if state.expires_at else None,
        "message": state.message,
    }
    return ConnectorView.model_validate(data)
