"""The JSON shapes of the API: request bodies (validated, every error naming its field) and responses
(they are the OpenAPI schema the API is tested against)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from ..problems import PROBLEM_BASE

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _unicode(value: str) -> str:
    # JSON may carry lone surrogates (\ud800) that no mail encoding can represent.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains characters that are not valid Unicode (a lone surrogate)") from None
    return value


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("contains control characters")
    return value


def _one_line(value: str) -> str:
    if _LINE_CONTROL.search(value):
        raise ValueError("must be one line without control characters")
    return value


def _base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64 (RFC 4648 §4, with padding)") from None


Text = Annotated[str, AfterValidator(_unicode), AfterValidator(_no_control)]
Line = Annotated[str, AfterValidator(_unicode), AfterValidator(_one_line)]
# A plain dot-atom address, narrower than RFC 5321 allows: documented where the schema must promise only
# what the server accepts (schemathesis sends every string a pattern allows).
_ADDRESS = (
    r"[A-Za-z0-9]{1,20}([._+-][A-Za-z0-9]{1,20}){0,2}@[A-Za-z0-9]{1,20}(-[A-Za-z0-9]{1,20})?"
    r"(\.[A-Za-z0-9]{1,20}){0,2}\.[A-Za-z]{2,12}"
)
ADDRESS_PATTERN = f"^{_ADDRESS}$"
# The documented form of an address field: bare, or with a plain display name. The server also takes
# quoted and non-ASCII names (RFC 5322 §3.4, RFC 6532); the schema promises the common subset.
NAMED_ADDRESS_PATTERN = f"^([A-Za-z][A-Za-z ]{{0,30}} <{_ADDRESS}>|{_ADDRESS})$"


AddressText = Annotated[
    str,
    Field(
        min_length=3,
        max_length=998,
        description="An address, optionally with a display name: `Ann <a@b.com>`.",
        json_schema_extra={"pattern": NAMED_ADDRESS_PATTERN},
    ),
    AfterValidator(_unicode),
    AfterValidator(_one_line),
]
Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_base64),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "description": "The bytes, base64-encoded."}),
]
AddressList = Annotated[list[AddressText], Field(max_length=500)]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: Annotated[Line, Field(min_length=1, max_length=255, description="The file name the recipient sees.")]
    content_type: Annotated[
        str | None,
        Field(
            max_length=255,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$",
            description="MIME type, e.g. application/pdf; guessed from the file name when absent.",
        ),
    ] = None
    content: Base64Bytes
    content_id: Annotated[
        str | None,
        Field(
            max_length=255,
            pattern=r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+$",
            description="Makes the part an inline image that the HTML refers to as `cid:<content_id>`.",
        ),
    ] = None


# The schema says "at least one of to, cc, bcc" too, so that every body it allows is one the server takes.
# Likewise "inline images (an attachment with a content_id) need an HTML body".
_SOME_RECIPIENT: dict[str, Any] = {
    "anyOf": [{"required": [name], "properties": {name: {"minItems": 1}}} for name in ("to", "cc", "bcc")],
    "if": {
        "required": ["attachments"],
        "properties": {
            "attachments": {"contains": {"required": ["content_id"], "properties": {"content_id": {"type": "string"}}}}
        },
    },
    "then": {"required": ["html"], "properties": {"html": {"type": "string"}}},
}


class MessageIn(BaseModel):
    """A message to send. At least one of to, cc, bcc."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra=_SOME_RECIPIENT)

    sender: Annotated[
        AddressText | None,
        Field(alias="from", description="From; default: the connector's mailbox (it must be allowed to send as it)."),
    ] = None
    to: AddressList = Field(default_factory=list)
    cc: AddressList = Field(default_factory=list)
    bcc: AddressList = Field(default_factory=list, description="Blind copies: delivered, never shown.")
    reply_to: AddressList = Field(default_factory=list)
    subject: Annotated[Line, Field(max_length=998)] = ""
    text: Text | None = Field(None, description="Plain-text body.")
    html: Text | None = Field(None, description="HTML body (with text: a multipart/alternative message).")
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=250)
    headers: dict[Annotated[Line, Field(max_length=76)], Annotated[Line, Field(max_length=998)]] = Field(
        default_factory=dict,
        description="Custom headers. Names must start with `X-` (Microsoft Graph accepts no others).",
    )
    importance: Literal["low", "normal", "high"] | None = None
    save_to_sent_items: bool = Field(True, strict=True, description="Keep a copy in the mailbox's Sent Items.")
    connector: Annotated[str | None, Field(max_length=64, description="Connector name; default: `default`.")] = None


# -- responses ------------------------------------------------------------------------------------


class MessageAccepted(BaseModel):
    id: int
    status: str = Field(description="queued, or the current status when an idempotent request is replayed.")
    status_url: str = Field(description="Where to follow the message (GET).")


class EventView(BaseModel):
    at: str
    kind: str
    detail: str | None
    request_id: str | None


class LastErrorView(BaseModel):
    kind: str
    code: str | None
    status: int | None
    request_id: str | None
    message: str | None
    remedy: str | None = Field(description="What to do about it, in an administrator's words.")


class RecipientView(BaseModel):
    address: str
    state: str = Field(
        description="queued, sending, deferred, sent, failed or cancelled (the message's status), "
        "or bounced / delayed (a delivery report said so) or suppressed (dropped at acceptance)."
    )
    status: str | None = Field(description="RFC 3463 status of the report, e.g. 5.1.10.")
    diagnostic: str | None
    at: str | None = Field(description="When: the report's date, the send, or the suppression.")


class MessageView(BaseModel):
    id: int
    connector_id: int
    connector: str | None
    status: Literal["queued", "sending", "deferred", "sent", "failed", "cancelled"]
    envelope_from: str | None
    recipients: list[RecipientView]
    subject: str | None
    from_: str | None = Field(alias="from")
    message_id: str | None
    size: int
    save_to_sent_items: bool
    source: str
    source_detail: str | None
    idempotency_key: str | None
    attempts: int
    next_attempt_at: str | None
    expires_at: str
    graph_request_id: str | None
    created_at: str
    updated_at: str
    sent_at: str | None
    last_error: LastErrorView | None
    events: list[EventView]

    model_config = ConfigDict(populate_by_name=True)


class MessagePage(BaseModel):
    items: list[MessageView]
    next: str | None = Field(description="Cursor of the next page (pass it as `cursor`); null on the last page.")
    next_url: str | None


class CredentialView(BaseModel):
    kind: str
    description: str
    hint: str | None
    thumbprint_sha1: str | None
    thumbprint_sha256: str | None
    set_on: str
    expires_on: str | None
    days_left: int | None
    verified_at: str | None


class ExpiryView(BaseModel):
    level: Literal["ok", "notice", "warning", "critical", "expired", "none"]
    days_left: int | None
    seconds_left: float | None
    expires_at: str | None
    message: str


class ConnectorView(BaseModel):
    id: int
    name: str
    client_id: str
    tenant_id: str
    user_name: str
    send_as: list[str] = Field(
        default_factory=list,
        description="Further mailboxes the connector sends from, each through its own /users/{mailbox}/sendMail: "
        "addresses, or `@domain` for any mailbox of a domain.",
    )
    cloud: str
    login_url: str
    graph_url: str
    graph_resource: str = Field(description="The resource tokens are issued for (`{graph_resource}/.default`).")
    ca_file: str | None
    state: Literal["active", "paused"]
    state_reason: str | None
    state_error_kind: str | None
    state_error_code: str | None
    state_remedy: str | None
    state_changed_at: str | None
    next_probe_at: str | None
    consent_granted_at: str | None
    credential: CredentialView | None
    next_credential: CredentialView | None
    old_credential: CredentialView | None
    expiry: ExpiryView
    updated_at: str


class ConnectorList(BaseModel):
    items: list[ConnectorView]


class FieldErrorView(BaseModel):
    field: str = Field(description="The field, as the request names it: `to[2]`, `attachments[0].content`.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem (``application/problem+json``)."""

    type: str = Field(description=f"A URI under {PROBLEM_BASE}; see docs/api.md.")
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldErrorView] | None = Field(None, description="Validation errors, one per field.")
    remedy: str | None = None
    correlation_id: str | None = Field(None, description="500 only: the id the server log has the details under.")


PROBLEM_DESCRIPTIONS = {
    401: "No API key, or an invalid or revoked one (`WWW-Authenticate: Bearer`).",
    403: "The API key lacks the scope this needs.",
    404: "No such message.",
    409: "Conflict: the idempotency key was used for a different request, or the message's state forbids it.",
    413: "The request body is larger than `api_max_body_bytes`.",
    415: "The body is not of the media type this endpoint takes.",
    422: "A field is invalid; `errors` names each.",
    429: "Over this key's rate limit; retry after `Retry-After` seconds.",
    500: "Unexpected error; the server log has it under `correlation_id`.",
    503: "The database is unavailable, or the queue is full; retry after `Retry-After` seconds.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these problem statuses (the app rewrites their media type to problem+json)."""
    return {s: {"model": Problem, "description": PROBLEM_DESCRIPTIONS[s]} for s in (401, 403, 429, 500, *statuses)}
