"""What every API request works with: the runtime, the key store, the rate limiter, a short-lived view of
the connectors, and the dependencies that authenticate, authorise and rate-limit a request.

Order of the checks: the key (401), its scope (403), its rate (429). A 401 carries
``WWW-Authenticate: Bearer`` (RFC 6750 §3) and a 403 for a missing scope says which scope it needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ...access.api_keys import ApiKey, ApiKeyStore
from ...connectors import ConnectorConfig
from ...errors import NotFoundError, StoreError
from ..problems import STORE_RETRY_AFTER, ProblemError, problem_response
from ..ratelimit import RateLimiter, retry_after_header
from .checkcache import CheckCache

if TYPE_CHECKING:
    from ...runtime import Runtime

REALM = 'Bearer realm="m365relay"'
QUERY_KEY_NAMES = ("api_key", "apikey", "key", "access_token", "token")
CONNECTOR_TTL = 1.0  # seconds a connector lookup may be stale (a new connector is found at once on a miss)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key made with `m365relay api-key create`: `Authorization: Bearer m365r_…`.",
)


class ConnectorDirectory:
    """Connectors by name for the ingest path, re-read at most once a second (not once per message)."""

    def __init__(self, runtime: Runtime, ttl: float = CONNECTOR_TTL) -> None:
        self.runtime = runtime
        self.ttl = ttl
        self._by_name: dict[str, ConnectorConfig] = {}
        self._at = -1e9
        self._lock = threading.Lock()

    def _refresh(self) -> dict[str, ConnectorConfig]:
        by_name = {c.name: c for c in self.runtime.connectors.all()}
        with self._lock:
            self._by_name, self._at = by_name, time.monotonic()
        return by_name

    def all(self) -> dict[str, ConnectorConfig]:
        with self._lock:
            fresh = time.monotonic() - self._at < self.ttl
            current = self._by_name
        return current if fresh else self._refresh()

    def get(self, name: str) -> ConnectorConfig:
        found = self.all().get(name) or self._refresh().get(name)
        if found is None:
            raise NotFoundError(f"no connector {name!r}")
        return found

    def names(self) -> dict[int, str]:
        return {c.id: c.name for c in self.all().values()}


@dataclass(frozen=True)
class ApiContext:
    runtime: Runtime
    keys: ApiKeyStore
    limiter: RateLimiter
    connectors: ConnectorDirectory
    checks: CheckCache[object]

    @classmethod
    def build(cls, runtime: Runtime) -> ApiContext:
        s = runtime.settings
        return cls(
            runtime=runtime,
            keys=ApiKeyStore(runtime.db, runtime.clock),
            limiter=RateLimiter(s.api_rate_limit, 2 * s.api_rate_limit, clock=runtime.clock),
            connectors=ConnectorDirectory(runtime),
            checks=CheckCache(runtime.clock),
        )


def api_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(api_context)]


def _unauthorized(detail: str, *, invalid: bool = False) -> ProblemError:
    challenge = f'{REALM}, error="invalid_token"' if invalid else REALM
    return ProblemError("unauthorized", detail, headers={"WWW-Authenticate": challenge})


async def authenticate(
    request: Request,
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> ApiKey:
    early: ApiKey | None = request.scope.get("state", {}).get("api_key")
    if early is not None:  # PreAuthMiddleware checked it before the body was read
        return early
    return await check_key(request, context)


async def check_key(request: Request, context: ApiContext) -> ApiKey:
    """The request's valid, unrevoked API key, or the 401 problem saying what is wrong."""
    if any(name in request.query_params for name in QUERY_KEY_NAMES):
        # URLs end up in access logs, proxies and browser histories: a key there is a leaked key.
        raise _unauthorized("API keys are accepted only in the Authorization header (Bearer), never in the URL.")
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise _unauthorized("This endpoint needs an API key: send `Authorization: Bearer <API key>`.")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("The Authorization header must read `Bearer <API key>`.", invalid=True)
    key = await run_in_threadpool(context.keys.authenticate, token.strip())
    if key is None:
        raise _unauthorized("The API key is not valid.", invalid=True)
    if key.revoked:
        raise _unauthorized(f"The API key {key.name!r} has been revoked.", invalid=True)
    return key


class PreAuthMiddleware:
    """Authenticate requests that carry a body before the body is read: an anonymous client must not make
    the server buffer and parse up to ``api_max_body_bytes`` of JSON. The key found is handed on to the
    ``authenticate`` dependency, so it is looked up once."""

    def __init__(self, app: ASGIApp, context: ApiContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            key = await check_key(request, self.context)
        except ProblemError as exc:
            response = problem_response(request, "unauthorized", str(exc.detail), headers=dict(exc.headers or {}))
            await response(scope, receive, send)
            return
        except StoreError as exc:
            # This middleware sits outside the app's error handlers: a database outage met here must get the
            # same 503 store-unavailable (with Retry-After) as one met inside a route, not a bare 500.
            response = problem_response(
                request, "store-unavailable", exc.message, headers={"Retry-After": STORE_RETRY_AFTER}, remedy=exc.remedy
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)


def require(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency: a valid key with ``scope`` (``admin`` implies every scope), within its rate limit."""

    async def dependency(key: Annotated[ApiKey, Depends(authenticate)], context: Context) -> ApiKey:
        if not key.allows(scope):
            raise ProblemError(
                "forbidden",
                f"The API key {key.name!r} lacks the {scope!r} scope (it has: {', '.join(key.scopes)}).",
                headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'},
            )
        wait = context.limiter.acquire(key.id)
        if wait is not None:
            retry_after = retry_after_header(wait)
            raise ProblemError(
                "rate-limited",
                f"The API key {key.name!r} may make {context.limiter.rate:g} requests per second "
                f"(bursts of {context.limiter.burst:g}); retry after {retry_after} s.",
                headers={"Retry-After": retry_after},
            )
        return key

    return dependency
