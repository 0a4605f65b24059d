"""Liveness and readiness, for load balancers and orchestrators.

* ``/healthz`` — the process answers (liveness). It never touches the database, so a slow database does
  not get a healthy process killed.
* ``/readyz`` — the relay can take and send mail: the database answers and at least one connector is
  active → 200 ``ready``; but a credential expires within 7 days (or has expired), has none, or some
  connectors are paused → 200 ``degraded`` with the reasons (mail still flows: keep routing traffic
  here, but someone should act); the database does not answer, or no connector is active → 503
  ``unavailable`` with the reasons.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .. import __version__
from ..connectors.expiry import expiry_state
from ..errors import StoreError

if TYPE_CHECKING:
    from ..runtime import Runtime

router = APIRouter(include_in_schema=False)

Status = Literal["ready", "degraded", "unavailable"]
READY_RETRY_AFTER = "5"


@dataclass(frozen=True)
class Readiness:
    status: Status
    reasons: list[str] = field(default_factory=list)

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unavailable" else 200

    def body(self) -> dict[str, object]:
        return {"status": self.status, "reasons": self.reasons}


def readiness(runtime: Runtime) -> Readiness:
    try:
        runtime.db.ping()
        connectors = runtime.connectors.all()
    except StoreError as exc:
        return Readiness("unavailable", [f"database: {exc.message}"])
    if not connectors:
        return Readiness("unavailable", ["no connector is configured (m365relay connector set)"])
    now = runtime.clock.now()
    reasons: list[str] = []
    for c in connectors:
        if c.paused:
            reasons.append(f"connector {c.name} is paused: {c.state_reason or 'no reason recorded'}")
        state = expiry_state(c, now)
        if state.level in ("critical", "expired", "none"):
            reasons.append(state.message if state.level != "none" else f"connector {c.name}: {state.message}")
    if not any(not c.paused for c in connectors):
        return Readiness("unavailable", ["no connector is active", *reasons])
    return Readiness("degraded" if reasons else "ready", reasons)


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is up (liveness). Readiness — database, connectors — is /readyz."""
    return JSONResponse({"status": "ok", "version": __version__})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    result = await asyncio.to_thread(readiness, runtime)
    headers = {"Cache-Control": "no-store"}
    if result.http_status == 503:
        headers["Retry-After"] = READY_RETRY_AFTER  # RFC 9110 §10.2.3: a 503 says when to look again
    return JSONResponse(result.body(), status_code=result.http_status, headers=headers)
