"""The boundary between Graph's HTTP answers and our exception tree (PROTOCOL.md §6)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..errors import (
    AccessPolicyError,
    ConsentMissingError,
    DeliveryError,
    Diagnostics,
    EndpointError,
    InvalidHeaderError,
    InvalidRecipientsError,
    MailboxNotEnabledError,
    MailboxNotFoundError,
    MalformedMessageError,
    MessageTooLargeError,
    PermissionMissingError,
    SendAsDeniedError,
    ServiceUnavailableError,
    ThrottledError,
    TokenRejectedError,
    TooManyRecipientsError,
    TransientError,
)
from ..net import parse_retry_after

# Graph error code → error class, for codes whose meaning does not depend on anything else.
BY_CODE: dict[str, type[DeliveryError]] = {
    "NoPermissionsInAccessToken": ConsentMissingError,
    "InvalidAuthenticationToken": TokenRejectedError,
    "ErrorSendAsDenied": SendAsDeniedError,
    "ErrorInvalidUser": MailboxNotFoundError,
    "MailboxNotEnabledForRESTAPI": MailboxNotEnabledError,
    "MailboxNotSupportedForRESTAPI": MailboxNotEnabledError,
    "ErrorInvalidRecipients": InvalidRecipientsError,
    "ErrorRecipientNotFound": InvalidRecipientsError,
    "InvalidInternetMessageHeader": InvalidHeaderError,
    "ErrorMessageSizeExceeded": MessageTooLargeError,
    "ErrorMimeContentInvalidBase64String": MalformedMessageError,
    "ErrorMimeContentConversionFailed": MalformedMessageError,
    "ErrorTooManyRecipients": TooManyRecipientsError,
    "ApplicationThrottled": ThrottledError,
    "TooManyRequests": ThrottledError,
    "ErrorServerBusy": ThrottledError,
    "ErrorSubmissionQuotaExceeded": ThrottledError,
}
TRANSIENT_STATUS = {408, 409, 423, 425, 500, 502, 503, 504}


def error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def diagnostics(response: httpx.Response) -> Diagnostics:
    error = error_body(response)
    inner = error.get("innerError") or error.get("innererror") or {}
    if not isinstance(inner, dict):
        inner = {}
    message = str(error.get("message") or "")
    return Diagnostics(
        status=response.status_code,
        code=str(error.get("code") or f"HTTP{response.status_code}"),
        request_id=response.headers.get("request-id") or inner.get("request-id"),
        correlation_id=response.headers.get("client-request-id") or inner.get("client-request-id"),
        detail=message.splitlines()[0][:500] if message else None,
    )


def translate_graph_error(response: httpx.Response, what: str = "sendMail") -> DeliveryError:
    """A failed Graph response as one of our errors, with Retry-After where Graph gave one."""
    diag = diagnostics(response)
    status, code, detail = response.status_code, diag.code or "", diag.detail or ""
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    said = f"{what}: HTTP {status} {code}" + (f" — {detail}" if detail else "")
    if status == 429:
        return ThrottledError(said, diagnostics=diag, retry_after=retry_after)
    if 300 <= status < 400:
        where = response.headers.get("location", "")
        return EndpointError(f"{said} (a redirect{' to ' + where.split('?')[0] if where else ''})", diagnostics=diag)
    if status == 403 and code == "ErrorAccessDenied":
        # The RAOP marker is how Exchange says an application access policy blocked the mailbox.
        cls: type[DeliveryError] = (
            AccessPolicyError if "RAOP" in detail or "AccessPolicy" in detail else (PermissionMissingError)
        )
        return cls(said, diagnostics=diag)
    if status == 413 or "maximum request length" in detail.lower():
        return MessageTooLargeError(said, diagnostics=diag)
    cls_by_code = BY_CODE.get(code)
    if cls_by_code is not None:
        if issubclass(cls_by_code, TransientError):
            return cls_by_code(said, diagnostics=diag, retry_after=retry_after)
        return cls_by_code(said, diagnostics=diag)
    if status in TRANSIENT_STATUS:
        return ServiceUnavailableError(said, diagnostics=diag, retry_after=retry_after)
    if status == 401:
        return TokenRejectedError(said, diagnostics=diag)
    if status == 403:
        return PermissionMissingError(said, diagnostics=diag)
    if status == 404:
        return MailboxNotFoundError(said, diagnostics=diag)
    if status >= 500:
        return ServiceUnavailableError(said, diagnostics=diag, retry_after=retry_after)
    return MalformedMessageError(said, diagnostics=diag, remedy=f"Microsoft Graph refused the message ({code}).")
