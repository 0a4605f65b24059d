"""A Python client for the relay's HTTP API, for applications on other hosts (httpx underneath).

::

    from m365relay.client import RelayClient

    with RelayClient("https://relay.contoso.com", api_key) as relay:
        accepted = relay.send(to=["ops@contoso.com"], subject="Backup done", text="All good.",
                              attachments=["report.pdf"], idempotency_key="backup-2026-05-01")
        message = relay.wait(accepted.id, timeout=60)   # sent, failed or cancelled (or the state at timeout)

Webhook receivers check what the relay sends with ``verify_webhook(body, headers, secret)``
(webhook_signature.py), which raises ``WebhookVerificationError``.

``AsyncRelayClient`` has the same methods as coroutines. Errors are raised as the typed exceptions below,
each carrying the API's problem (``type``, ``detail``, field ``errors``) — never a bare HTTP status.
They are ``M365RelayError``s: ``transient`` says whether trying again later may succeed.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from .errors import M365RelayError
from .webhook_signature import WebhookVerificationError, verify_webhook  # noqa: F401 - re-exported for receivers

PROBLEM_BASE = "https://m365relay.dev/problems/"
FINAL = ("sent", "failed", "cancelled")
DEFAULT_TIMEOUT = 30.0


# -- errors -----------------------------------------------------------------------------------------


class ApiError(M365RelayError):
    """The API answered with a problem (RFC 9457), or could not be reached."""

    def __init__(self, problem: dict[str, Any], *, retry_after: float | None = None) -> None:
        detail = str(problem.get("detail") or problem.get("title") or "the relay API refused the request")
        super().__init__(detail, remedy=problem.get("remedy"))
        self.problem = problem
        self.type = str(problem.get("type", "about:blank"))
        self.slug = self.type.removeprefix(PROBLEM_BASE)
        self.title = str(problem.get("title", ""))
        self.status = int(problem.get("status") or 0)
        self.detail = detail
        self.errors: list[dict[str, str]] = list(problem.get("errors") or [])
        self.retry_after = retry_after


class ApiConnectionError(ApiError):
    """The API could not be reached (connection refused, timeout, TLS): the request may be retried."""

    transient = True


class AuthenticationError(ApiError):
    """401: no API key, or an invalid or revoked one."""


class PermissionDeniedError(ApiError):
    """403: the key lacks the scope, or may not use that connector or message."""


class MessageNotFoundError(ApiError):
    """404: no such message."""


class IdempotencyConflictError(ApiError):
    """409: the idempotency key was used for a different request."""


class MessageStateError(ApiError):
    """409: the message's state does not allow this (cancel a sent message, say)."""


class PayloadTooLargeError(ApiError):
    """413: the request is larger than the relay accepts."""


class RequestValidationError(ApiError):
    """422: the request or the message is invalid; ``errors`` names each field."""


class RateLimitedError(ApiError):
    """429: over the key's rate limit; ``retry_after`` says for how long."""

    transient = True


class ServiceUnavailableError(ApiError):
    """503: the relay's database is unavailable or its queue is full; try again after ``retry_after``."""

    transient = True


class ServerError(ApiError):
    """5xx: an error in the relay; the problem's ``correlation_id`` finds it in the relay's log."""

    transient = True


_BY_SLUG: dict[str, type[ApiError]] = {
    "unauthorized": AuthenticationError,
    "forbidden": PermissionDeniedError,
    "not-found": MessageNotFoundError,
    "idempotency-conflict": IdempotencyConflictError,
    "message-state-conflict": MessageStateError,
    "payload-too-large": PayloadTooLargeError,
    "validation-error": RequestValidationError,
    "invalid-message": RequestValidationError,
    "rate-limited": RateLimitedError,
    "queue-full": ServiceUnavailableError,
    "store-unavailable": ServiceUnavailableError,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: MessageNotFoundError,
    413: PayloadTooLargeError,
    422: RequestValidationError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def error_for(response: httpx.Response) -> ApiError:
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            raise TypeError
    except (ValueError, TypeError):
        problem = {"status": response.status_code, "title": response.reason_phrase, "detail": response.text[:500]}
    problem.setdefault("status", response.status_code)
    slug = str(problem.get("type", "")).removeprefix(PROBLEM_BASE)
    cls = _BY_SLUG.get(slug) or _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else ApiError
    retry_after = response.headers.get("retry-after")
    return cls(problem, retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None)


# -- values -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str | None = None
    content_id: str | None = None  # an inline image the HTML refers to as cid:<content_id>

    @classmethod
    def from_path(
        cls, path: str | Path, *, content_type: str | None = None, content_id: str | None = None
    ) -> Attachment:
        p = Path(path)
        return cls(p.name, p.read_bytes(), content_type or mimetypes.guess_type(p.name)[0], content_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "content": base64.b64encode(self.content).decode("ascii"),
            "content_type": self.content_type,
            "content_id": self.content_id,
        }


AttachmentLike = Attachment | str | Path | tuple[str, bytes] | tuple[str, bytes, str]


@dataclass(frozen=True)
class Accepted:
    id: int
    status: str
    status_url: str
    replayed: bool = False  # an earlier request with the same idempotency key and content


@dataclass(frozen=True)
class MessageInfo:
    id: int
    status: str
    attempts: int
    recipients: list[str]
    subject: str | None
    last_error: dict[str, Any] | None
    events: list[dict[str, Any]]
    data: dict[str, Any] = field(repr=False)  # everything the API returned

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MessageInfo:
        return cls(
            id=int(data["id"]),
            status=str(data["status"]),
            attempts=int(data.get("attempts", 0)),
            # The API lists recipients with their delivery state; the address is what callers compare.
            recipients=[r["address"] if isinstance(r, dict) else r for r in data.get("recipients", [])],
            subject=data.get("subject"),
            last_error=data.get("last_error"),
            events=list(data.get("events", [])),
            data=data,
        )

    @property
    def final(self) -> bool:
        return self.status in FINAL


# -- requests (shared by both clients) ----------------------------------------------------------------


def _attachment(item: AttachmentLike) -> Attachment:
    if isinstance(item, Attachment):
        return item
    if isinstance(item, str | Path):
        return Attachment.from_path(item)
    if isinstance(item, tuple) and len(item) in (2, 3):
        return Attachment(str(item[0]), bytes(item[1]), str(item[2]) if len(item) == 3 else None)
    raise TypeError(f"an attachment is an Attachment, a path or (filename, bytes[, content_type]), not {item!r}")


def _addresses(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def message_json(
    *,
    to: str | list[str] | None = None,
    cc: str | list[str] | None = None,
    bcc: str | list[str] | None = None,
    reply_to: str | list[str] | None = None,
    sender: str | None = None,
    subject: str = "",
    text: str | None = None,
    html: str | None = None,
    attachments: list[AttachmentLike] | None = None,
    headers: dict[str, str] | None = None,
    importance: str | None = None,
    save_to_sent_items: bool = True,
    connector: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "to": _addresses(to),
        "cc": _addresses(cc),
        "bcc": _addresses(bcc),
        "reply_to": _addresses(reply_to),
        "subject": subject,
        "attachments": [_attachment(a).as_json() for a in attachments or []],
        "headers": dict(headers or {}),
        "save_to_sent_items": save_to_sent_items,
    }
    optional = {"from": sender, "text": text, "html": html, "importance": importance, "connector": connector}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def _raw_params(to: list[str] | None, connector: str | None, save_to_sent_items: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"save_to_sent_items": "true" if save_to_sent_items else "false"}
    if to:
        params["to"] = list(to)
    if connector:
        params["connector"] = connector
    return params


def _raw_bytes(message: bytes | str | Path) -> bytes:
    return Path(message).read_bytes() if isinstance(message, str | Path) else bytes(message)


def _accepted(response: httpx.Response) -> Accepted:
    data = _checked(response)
    return Accepted(
        int(data["id"]),
        str(data["status"]),
        str(data["status_url"]),
        response.headers.get("idempotent-replayed") == "true",
    )


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.is_error:
        raise error_for(response)
    data: dict[str, Any] = response.json()
    return data


def _client_options(url: str, api_key: str, timeout: float) -> dict[str, Any]:
    return {
        "base_url": url.rstrip("/") + "/api/v1",
        "headers": {"Authorization": f"Bearer {api_key}", "User-Agent": "m365relay-client"},
        "timeout": timeout,
    }


def _unreachable(exc: httpx.HTTPError) -> ApiConnectionError:
    return ApiConnectionError(
        {"title": "The relay could not be reached", "detail": f"{type(exc).__name__}: {exc}", "status": 0},
    )


# -- the clients --------------------------------------------------------------------------------------


class RelayClient:
    """Synchronous client. ``transport``/``verify`` go to httpx (a CA file for a private TLS certificate)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        verify: Any = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(**_client_options(url, api_key, timeout), verify=verify, transport=transport)

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc

    def send(self, *, idempotency_key: str | None = None, **fields: Any) -> Accepted:
        """Queue a message: ``to``, ``cc``, ``bcc``, ``reply_to``, ``sender``, ``subject``, ``text``, ``html``,
        ``attachments`` (``Attachment``, paths, or ``(filename, bytes[, content_type])``), ``headers`` (X-
        only), ``importance``, ``save_to_sent_items``, ``connector``."""
        body = message_json(**fields)
        return _accepted(self._request("POST", "/messages", json=body, headers=_idempotency(idempotency_key)))

    def send_raw(
        self,
        message: bytes | str | Path,
        *,
        to: list[str] | None = None,
        connector: str | None = None,
        save_to_sent_items: bool = True,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Queue a ready RFC 5322 message (bytes or a path to an .eml file); ``to`` sets the envelope."""
        headers = {"Content-Type": "message/rfc822", **_idempotency(idempotency_key)}
        params = _raw_params(to, connector, save_to_sent_items)
        response = self._request("POST", "/messages/raw", content=_raw_bytes(message), params=params, headers=headers)
        return _accepted(response)

    def get(self, message_id: int) -> MessageInfo:
        return MessageInfo.from_json(_checked(self._request("GET", f"/messages/{int(message_id)}")))

    def wait(self, message_id: int, timeout: float = 60.0, poll: float = 0.5) -> MessageInfo:
        """Poll until the message is sent, failed or cancelled; after ``timeout``, its state then."""
        deadline = time.monotonic() + timeout
        info = self.get(message_id)
        while not info.final and time.monotonic() < deadline:
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            info = self.get(message_id)
        return info

    def cancel(self, message_id: int) -> MessageInfo:
        return MessageInfo.from_json(_checked(self._request("DELETE", f"/messages/{int(message_id)}")))

    def retry(self, message_id: int) -> MessageInfo:
        return MessageInfo.from_json(_checked(self._request("POST", f"/messages/{int(message_id)}/retry")))

    def connectors(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _checked(self._request("GET", "/connectors"))["items"]
        return items


class AsyncRelayClient:
    """The same methods as ``RelayClient``, as coroutines (``async with AsyncRelayClient(...) as relay``)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        verify: Any = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(**_client_options(url, api_key, timeout), verify=verify, transport=transport)

    async def __aenter__(self) -> AsyncRelayClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc

    async def send(self, *, idempotency_key: str | None = None, **fields: Any) -> Accepted:
        body = await asyncio.to_thread(lambda: message_json(**fields))  # attachments may be read from files
        return _accepted(await self._request("POST", "/messages", json=body, headers=_idempotency(idempotency_key)))

    async def send_raw(
        self,
        message: bytes | str | Path,
        *,
        to: list[str] | None = None,
        connector: str | None = None,
        save_to_sent_items: bool = True,
        idempotency_key: str | None = None,
    ) -> Accepted:
        headers = {"Content-Type": "message/rfc822", **_idempotency(idempotency_key)}
        params = _raw_params(to, connector, save_to_sent_items)
        data = await asyncio.to_thread(_raw_bytes, message)
        return _accepted(await self._request("POST", "/messages/raw", content=data, params=params, headers=headers))

    async def get(self, message_id: int) -> MessageInfo:
        return MessageInfo.from_json(_checked(await self._request("GET", f"/messages/{int(message_id)}")))

    async def wait(
        self,
        message_id: int,
        timeout: float = 60.0,  # noqa: ASYNC109 - the same signature as RelayClient.wait
        poll: float = 0.5,
    ) -> MessageInfo:
        deadline = time.monotonic() + timeout
        info = await self.get(message_id)
        while not info.final and time.monotonic() < deadline:
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            info = await self.get(message_id)
        return info

    async def cancel(self, message_id: int) -> MessageInfo:
        return MessageInfo.from_json(_checked(await self._request("DELETE", f"/messages/{int(message_id)}")))

    async def retry(self, message_id: int) -> MessageInfo:
        return MessageInfo.from_json(_checked(await self._request("POST", f"/messages/{int(message_id)}/retry")))

    async def connectors(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _checked(await self._request("GET", "/connectors"))["items"]
        return items
