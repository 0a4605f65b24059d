"""What every Graph call goes through: ids, faults, size cap, token, permissions, mailbox, limits.

The order mirrors what a client can observe from the real service: front-door failures (injected
faults, the 4 MB cap) before authentication, authentication before authorization, the mailbox
lookup before the application access policy, throttling last — and a throttled or faulted request
changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import Response

from . import graph_errors as ge
from .directory import Mailbox
from .faults import FaultRule
from .graph_errors import GraphError
from .roles import MAIL_READWRITE, MAIL_SEND, READ_FULL
from .state import Sandbox

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # each REST request is capped at 4 MB [obs]
ROLE_SEND = MAIL_SEND
ROLE_READWRITE = MAIL_READWRITE
Roles = str | frozenset[str]  # one role, or a set of which any one lets the call through
ROLE_READ = READ_FULL  # Mail.Read, or Mail.ReadWrite which includes it [doc: permissions reference]
_FAULT_CODES = {
    429: ("TooManyRequests", "Please retry again later."),
    503: ("ServiceUnavailable", "Service Unavailable"),
    504: ("GatewayTimeout", "Gateway Timeout"),
}


@dataclass(frozen=True)
class Call:
    """One authorised Graph call, handed to the endpoint handler."""

    sandbox: Sandbox
    request: Request
    request_id: str
    client_id: str
    roles: frozenset[str]
    mailbox: Mailbox


Handler = Callable[[Call], Awaitable[Response]]


def ids(request: Request) -> tuple[str, str]:
    """(request-id, client-request-id): Graph echoes the client's id or makes one up."""
    request_id = str(uuid.uuid4())
    return request_id, request.headers.get("client-request-id") or request_id


def stamp(response: Response, request_id: str, client_request_id: str) -> Response:
    response.headers["request-id"] = request_id
    response.headers["client-request-id"] = client_request_id
    return response


async def abort_connection(sandbox: Sandbox, request: Request) -> Response:
    """Reset the TCP connection and wait until the server has noticed (then nothing is sent)."""
    sandbox.connections.abort(request.scope.get("client"))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            while (await request.receive())["type"] != "http.disconnect":
                pass
    return Response(status_code=500)


async def run_fault(sandbox: Sandbox, request: Request, endpoint: str) -> FaultRule | None:
    """Apply an injected fault: `slow` sleeps and returns None (carry on); others are returned."""
    rule = sandbox.faults.decide(endpoint, request.path_params.get("user"))
    if rule is None:
        return None
    sandbox.stats.faults[endpoint] += 1
    if rule.kind == "slow":
        await asyncio.sleep(rule.delay_ms / 1000)
        return None
    return rule


def fault_error(rule: FaultRule) -> GraphError:
    code, message = _FAULT_CODES.get(rule.status, ("InternalServerError", "An internal server error occurred."))
    headers = {"Retry-After": rule.retry_after} if rule.retry_after is not None else {}
    return GraphError(rule.status, rule.code or code, rule.message or message, headers)


def check_declared_size(request: Request, limit: int = MAX_REQUEST_BYTES) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ge.request_too_large()


async def read_body(request: Request, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The body, refusing more than `limit` bytes even when no Content-Length was sent."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ge.request_too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def authenticate(sandbox: Sandbox, request: Request) -> dict[str, Any]:
    """Validate the bearer token against the sandbox key, audience and clock."""
    base = sandbox.base_url
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ge.unauthorized("InvalidAuthenticationToken", "Access token is empty.", base)
    try:
        claims = sandbox.tokens.verify(token.strip())
    except jwt.InvalidSignatureError as exc:
        raise ge.unauthorized("InvalidAuthenticationToken", "Access token validation failure.", base) from exc
    except jwt.InvalidTokenError as exc:
        raise ge.unauthorized(
            "InvalidAuthenticationToken", "CompactToken parsing failed with error code: 80049217", base
        ) from exc
    now = sandbox.clock.now()
    exp, nbf = claims.get("exp", 0), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or exp <= now or (isinstance(nbf, int | float) and nbf > now):
        raise ge.unauthorized("InvalidAuthenticationToken", "Access token has expired or is not yet valid.", base)
    if claims.get("aud") not in sandbox.graph_audiences():
        raise ge.unauthorized("InvalidAuthenticationToken", "Access token validation failure.", base)
    return claims


def token_roles(sandbox: Sandbox, claims: dict[str, Any], role: Roles) -> frozenset[str]:
    """The token's roles, once it is clear they let this call through."""
    roles = frozenset(r for r in claims.get("roles") or [] if isinstance(r, str))
    if not roles:
        # No admin consent, or a delegated permission added instead of an application one.
        raise ge.unauthorized(
            "NoPermissionsInAccessToken",
            "The token contains no permissions, or permissions can not be understood.",
            sandbox.base_url,
        )
    wanted = frozenset({role}) if isinstance(role, str) else role
    if not roles & wanted:
        raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
    return roles


def authorize(sandbox: Sandbox, claims: dict[str, Any], user: str, role: Roles) -> tuple[frozenset[str], Mailbox]:
    roles = token_roles(sandbox, claims, role)
    directory = sandbox.directory
    mailbox = directory.find_mailbox(user)
    if mailbox is None or mailbox.tenant != claims.get("tid"):
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
    if not mailbox.licensed:
        raise GraphError(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    policy = directory.policies.get(str(claims.get("appid", "")).lower())
    if policy is not None and not policy.allows(mailbox.address):
        raise GraphError(
            403,
            "ErrorAccessDenied",
            "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
        )
    return roles, mailbox


async def graph_call(sandbox: Sandbox, request: Request, endpoint: str, role: Roles, handler: Handler) -> Response:
    """Run `handler` behind the checks every Graph mail endpoint shares."""
    request_id, client_request_id = ids(request)
    sandbox.stats.count(endpoint)
    drop = False
    try:
        rule = await run_fault(sandbox, request, endpoint)
        if rule is not None and rule.kind == "drop":
            drop, rule = True, None
        if rule is not None:
            if rule.kind == "reset":
                return await abort_connection(sandbox, request)
            if rule.status == 429:
                sandbox.stats.throttled["injected"] += 1
            raise fault_error(rule)
        check_declared_size(request)
        claims = authenticate(sandbox, request)
        roles, mailbox = authorize(sandbox, claims, request.path_params["user"], role)
        client_id = str(claims.get("appid", "")).lower()
        response = await _limited(sandbox, Call(sandbox, request, request_id, client_id, roles, mailbox), handler)
    except GraphError as error:
        sandbox.stats.graph_errors[f"{error.status} {error.code}"] += 1
        response = error.response(sandbox.clock.now(), request_id, client_request_id)
    if drop and response.status_code < 300:
        # The call was carried out (a send is delivered and filed); the client only loses the answer, the way
        # a front end that fails after Exchange accepted the request looks from outside.
        sandbox.stats.responses_dropped[endpoint] += 1
        return await abort_connection(sandbox, request)
    return stamp(response, request_id, client_request_id)


async def _limited(sandbox: Sandbox, call: Call, handler: Handler) -> Response:
    key = f"{call.client_id}|{call.mailbox.address.lower()}"
    limits = sandbox.directory.limits
    throttle = sandbox.limits.enter(key, limits)
    if throttle is not None:
        sandbox.stats.throttled[throttle.reason] += 1
        retry = (
            ge.format_retry_after(throttle.retry_after)
            if throttle.reason == "concurrency"
            else ge.ceil_seconds(throttle.retry_after)
        )
        raise ge.throttled(throttle.code, throttle.message, retry)
    tracker = sandbox.limits
    try:
        sandbox.stats.record_in_flight(key, tracker.in_flight.get(key, 0))
        if sandbox.latency_ms > 0:
            # The slot stays taken while "Exchange" works: that is what makes 4 in flight a ceiling.
            await asyncio.sleep(sandbox.latency_ms / 1000)
        return await handler(call)
    finally:
        tracker.leave(key)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    import json

    return Response(json.dumps(data), status_code=status, media_type="application/json", headers=headers)
