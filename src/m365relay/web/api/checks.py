"""``/connectors/{connector_id}/checks``: the doctor's six checks (``m365relay doctor``) over HTTP, in the
manual's order, each pass / warn / fail / skip with the remedy.

``GET`` runs checks 1–5 (it asks Microsoft for a fresh token, so it is a diagnosis, not a health probe:
``/readyz`` is that); ``POST`` with ``send_test_to`` also sends a real test message (check 6), which is why
it needs the admin scope. Never returns a secret or a token. Results are cached briefly and fresh runs are
limited per connector (``checkcache``), so polling cannot make the relay flood Entra ID with token requests.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ...access.api_keys import ApiKey
from ...doctor import CheckResult, exit_status, run_checks
from ..problems import ProblemError
from ..ratelimit import retry_after_header
from .checkcache import RunRefused
from .context import ApiContext, Context, require
from .models import ADDRESS_PATTERN, problem_responses

router = APIRouter(tags=["connectors"])

ConnectorId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The connector's id (see GET /connectors).")]


class CheckView(BaseModel):
    number: int = Field(description="1–6, the manual's order; 7 the optional read permission.")
    id: Literal["config", "tenant", "app", "credential", "permission", "mailbox", "read"]
    title: str
    status: Literal["pass", "warn", "fail", "skip"] = Field(description="skip: not run, `detail` says why.")
    detail: str
    remedy: str = Field(description="What the administrator should do; empty when nothing.")
    data: dict[str, Any] = Field(description="Facts for a UI: `consent_url`, `request_id`, `code`, `transient`, …")


class CheckReport(BaseModel):
    connector: str
    ok: bool = Field(description="No check failed (warnings and skipped checks allowed).")
    exit_status: int = Field(description="What `m365relay doctor` would exit with: 0, 75 (temporary), 78 (setup).")
    checks: list[CheckView]


class SendTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The schema says what the server takes (schemathesis checks that every string it allows is accepted):
    # a plain dot-atom address, narrower than RFC 5321 but enough for a test message.
    send_test_to: str = Field(
        max_length=254,
        pattern=ADDRESS_PATTERN,
        description="Send a real test message to this address (check 6).",
    )


@router.get(
    "/connectors/{connector_id}/checks",
    response_model=CheckReport,
    summary="Check a connector's setup",
    responses=problem_responses(404, 429, 503),
)
async def get_checks(
    connector_id: ConnectorId, context: Context, key: Annotated[ApiKey, Depends(require("read"))]
) -> CheckReport:
    """Checks 1–5 against Microsoft 365: configuration, tenant in its cloud, app, credential, Mail.Send consent.
    Check 6 (the mailbox) is reported as not run; POST runs it. The result is kept for 30 seconds (a changed
    configuration is checked afresh at once); fresh runs are limited to 6 a minute per connector (429)."""
    return await _report(context, key, connector_id, None)


@router.post(
    "/connectors/{connector_id}/checks",
    response_model=CheckReport,
    summary="Check a connector's setup and send a test message",
    responses=problem_responses(404, 413, 422, 429, 503),
)
async def post_checks(
    connector_id: ConnectorId,
    body: SendTest,
    context: Context,
    key: Annotated[ApiKey, Depends(require("admin"))],
) -> CheckReport:
    """All six checks; check 6 sends a real message to `send_test_to` and reports Graph's request id."""
    return await _report(context, key, connector_id, body.send_test_to)


async def _report(context: ApiContext, key: ApiKey, connector_id: int, send_test_to: str | None) -> CheckReport:
    if key.connector_id is not None and key.connector_id != connector_id:
        # A key bound to one connector (api-key create --connector) acts for that connector only.
        raise ProblemError("forbidden", f"The API key {key.name!r} is bound to another connector.")
    runtime = context.runtime
    connector = await run_in_threadpool(runtime.connectors.get, connector_id)

    async def run() -> CheckReport:
        results = await run_checks(runtime, connector, send_test_to=send_test_to)
        code = exit_status(results)
        return CheckReport(connector=connector.name, ok=code == 0, exit_status=code, checks=[_view(r) for r in results])

    try:
        if send_test_to is None:
            report = await context.checks.get(connector, run)
        else:  # a test message is never answered from the cache
            report = await context.checks.fresh(connector, run)
    except RunRefused as exc:
        retry_after = retry_after_header(exc.retry_after)
        raise ProblemError(
            "rate-limited",
            f"Connector {connector.name!r} was checked too often (each check asks Microsoft for a token); "
            f"retry after {retry_after} s.",
            headers={"Retry-After": retry_after},
        ) from None
    assert isinstance(report, CheckReport)
    return report


def _view(result: CheckResult) -> CheckView:
    return CheckView.model_validate(result.to_dict())
