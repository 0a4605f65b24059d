"""Every API error is an RFC 9457 problem: ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and ``instance``, plus extension members where they help (``errors`` naming the fields of a
validation error, ``remedy``, ``correlation_id``).

Each ``type`` is a stable URI under ``https://m365relay.dev/problems/`` that clients may switch on; every one
is listed in ``PROBLEM_TYPES`` and documented in docs/api.md (a test keeps the two in step). Nothing here
ever puts a secret, a request body or a stack trace into a response: a 500 answers a generic problem and
logs the traceback server-side under the correlation id it returns.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ConflictError, M365RelayError, MessageError, NotFoundError, StoreError, ValidationError

log = logging.getLogger("m365relay.web")

PROBLEM_BASE = "https://m365relay.dev/problems/"
MEDIA_TYPE = "application/problem+json"
STORE_RETRY_AFTER = "5"  # seconds: a database outage is usually over by then (a restart, a failover)


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug


PROBLEM_TYPES: dict[str, ProblemType] = {
    p.slug: p
    for p in (
        ProblemType("bad-request", 400, "The request could not be understood"),
        ProblemType("unauthorized", 401, "A valid API key is required"),
        ProblemType("forbidden", 403, "The API key may not do this"),
        ProblemType("not-found", 404, "Not found"),
        ProblemType("method-not-allowed", 405, "Method not allowed"),
        ProblemType("message-state-conflict", 409, "The message's state does not allow this"),
        ProblemType("idempotency-conflict", 409, "The idempotency key was used for a different request"),
        ProblemType("conflict", 409, "The request conflicts with the current state"),
        ProblemType("payload-too-large", 413, "The request body is too large"),
        ProblemType("unsupported-media-type", 415, "Unsupported media type"),
        ProblemType("validation-error", 422, "The request is not valid"),
        ProblemType("invalid-message", 422, "The message cannot be sent as it is"),
        ProblemType("recipient-suppressed", 422, "Every recipient is on the suppression list"),
        ProblemType("rate-limited", 429, "Too many requests for this API key"),
        ProblemType("internal-error", 500, "Internal error"),
        ProblemType("queue-full", 503, "The relay is not accepting mail right now"),
        ProblemType("store-unavailable", 503, "The database is unavailable"),
    )
}
_BY_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
}


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ProblemError(StarletteHTTPException):
    """Raise to answer a problem. A Starlette ``HTTPException`` so that FastAPI passes it through even when it
    is raised while the request body is read (the streaming body limit does that)."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: Sequence[FieldError] = (),
        **extensions: Any,
    ) -> None:
        self.problem = PROBLEM_TYPES[slug]
        super().__init__(self.problem.status, detail, headers)
        self.errors = list(errors)
        self.extensions = extensions


def problem_body(
    problem: ProblemType, detail: str, instance: str, errors: Sequence[FieldError] = (), **extensions: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": problem.uri,
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        "instance": instance,
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    body.update({k: v for k, v in extensions.items() if v is not None})
    return body


def problem_response(
    request: Request,
    slug: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: Sequence[FieldError] = (),
    **extensions: Any,
) -> JSONResponse:
    problem = PROBLEM_TYPES[slug]
    body = problem_body(problem, detail, _instance(request), errors, **extensions)
    return JSONResponse(body, status_code=problem.status, headers=headers, media_type=MEDIA_TYPE)


def _instance(request: Request) -> str:
    # RFC 9457 §3.1.5: a URI reference for this occurrence; the full request path identifies it.
    return str(request.scope.get("path", ""))


# -- translation ----------------------------------------------------------------------------------


def field_name(loc: Sequence[str | int]) -> str:
    """``("body", "attachments", 0, "content")`` → ``attachments[0].content``; query/header/path → the name."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "header", "path", "cookie"):
        where, parts = parts[0], parts[1:]
        if where == "header" and parts:
            return "-".join(w.capitalize() for w in str(parts[0]).split("-"))
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_errors(exc: RequestValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            message = "the body is not valid JSON: " + str(error.get("ctx", {}).get("error", "syntax error"))
            errors.append(FieldError("body", message))
            continue
        # Pydantic prefixes messages of custom validators with "Value error, "; the field name says enough.
        errors.append(FieldError(field_name(error.get("loc", ())), message.removeprefix("Value error, ")))
    return errors


def _relay_error_problem(exc: M365RelayError) -> tuple[str, list[FieldError], dict[str, str] | None]:
    if isinstance(exc, ValidationError):
        return "validation-error", [FieldError(e.key, e.reason) for e in exc.all_errors], None
    if isinstance(exc, NotFoundError):
        return "not-found", [], None
    if isinstance(exc, ConflictError):
        return "conflict", [], None
    if isinstance(exc, MessageError):
        return "invalid-message", [], None
    if isinstance(exc, StoreError):
        return "store-unavailable", [], {"Retry-After": STORE_RETRY_AFTER}
    return "internal-error", [], None


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path (Starlette's 405 lists the methods of the first
    route whose path matches, only). Asked of the routes themselves, one method at a time."""
    from starlette.routing import Match

    routes = request.app.routes
    found = [
        method
        for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return found


def install(app: FastAPI) -> None:
    """Make every error of ``app`` a problem."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(
            request,
            exc.problem.slug,
            str(exc.detail),
            headers=dict(exc.headers or {}),
            errors=exc.errors,
            **exc.extensions,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug = _BY_STATUS.get(exc.status_code, "bad-request" if exc.status_code < 500 else "internal-error")
        detail = str(exc.detail) if exc.status_code != 404 else f"nothing at {_instance(request)}"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # RFC 9110 §15.5.6: Allow lists every method of the resource, not one route's
            headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
        return problem_response(request, slug, detail, headers=headers or None)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = validation_errors(exc)
        fields = ", ".join(dict.fromkeys(e.field for e in errors))
        return problem_response(request, "validation-error", f"invalid value(s): {fields}", errors=errors)

    async def on_relay_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, M365RelayError)
        slug, errors, headers = _relay_error_problem(exc)
        if slug == "internal-error":
            return unexpected_error_response(request, exc)
        return problem_response(request, slug, exc.message, headers=headers, errors=errors, remedy=exc.remedy or None)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(M365RelayError, on_relay_error)
    app.add_middleware(UnexpectedErrorMiddleware)


def unexpected_error_response(request: Request, exc: BaseException) -> JSONResponse:
    correlation_id = uuid.uuid4().hex
    log.error(
        "unexpected error %s on %s %s",
        correlation_id,
        request.method,
        _instance(request),
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return problem_response(
        request,
        "internal-error",
        f"The relay met an unexpected error; its log has the details under correlation id {correlation_id}.",
        correlation_id=correlation_id,
    )


class UnexpectedErrorMiddleware:
    """Any exception no handler claimed becomes a generic 500 problem, logged once with a correlation id.

    Starlette's own last-resort handler would answer too, but then re-raise, so the server logs the same
    traceback again without the id; this middleware ends the story here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            response = unexpected_error_response(Request(scope), exc)
            await response(scope, receive, send)
