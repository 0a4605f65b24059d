"""Turning a Graph `message` resource (JSON) into what Exchange delivers, with Graph's validation."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Any

from . import graph_errors as ge
from .directory import Mailbox
from .graph_errors import GraphError
from .rfc5322 import AttachmentData, build_message, format_address, valid_address

MAX_RECIPIENTS = 500  # per message, To+Cc+Bcc [doc]


def ci_get(data: dict[str, Any], key: str) -> Any:
    """Graph property names are case-insensitive (`Message` and `message` both work)."""
    if key in data:
        return data[key]
    lowered = key.lower()
    for name, value in data.items():
        if name.lower() == lowered:
            return value
    return None


def new_message_id(mailbox: Mailbox) -> str:
    domain = mailbox.address.rpartition("@")[2]
    return f"<{uuid.uuid4().hex.upper()}@{domain}>"


def check_header_names(message: dict[str, Any]) -> None:
    """Custom headers must be named `x-…` or `X-…` [doc]."""
    headers = ci_get(message, "internetMessageHeaders") or []
    if not isinstance(headers, list):
        raise GraphError(400, "BadRequest", "internetMessageHeaders must be a collection.")
    for item in headers:
        name = str(item.get("name", "")) if isinstance(item, dict) else ""
        if not name.lower().startswith("x-"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
            )


def _addresses(message: dict[str, Any], key: str) -> list[str]:
    entries = ci_get(message, key) or []
    if not isinstance(entries, list):
        raise GraphError(400, "BadRequest", f"{key} must be a collection of recipients.")
    out: list[str] = []
    for entry in entries:
        inner = entry.get("emailAddress") if isinstance(entry, dict) else None
        address = str(inner.get("address") or "").strip() if isinstance(inner, dict) else ""
        if not valid_address(address):
            raise ge.invalid_recipients(
                f"Recipient '{address}' is not resolved. All recipients must be resolved before a message "
                "can be submitted."
            )
        out.append(address)
    return out


def check_recipient_count(count: int) -> None:
    if count == 0:
        raise ge.invalid_recipients("A message can't be sent because it contains no recipients.")
    if count > MAX_RECIPIENTS:
        # [?] undocumented code; the limit itself is documented (500 per message).
        raise GraphError(
            400,
            "ErrorTooManyRecipients",
            f"The message has {count} recipients; the maximum per message is {MAX_RECIPIENTS}.",
        )


def parse_attachment(item: Any) -> AttachmentData:
    if not isinstance(item, dict):
        raise GraphError(400, "BadRequest", "An attachment must be an object.")
    kind = str(ci_get(item, "@odata.type") or "#microsoft.graph.fileAttachment")
    if kind.lower() != "#microsoft.graph.fileattachment":
        raise GraphError(400, "ErrorInvalidRequest", f"The sandbox only accepts fileAttachment, got '{kind}'.")
    try:
        data = base64.b64decode(str(ci_get(item, "contentBytes") or ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GraphError(400, "BadRequest", "Invalid base64 string for attachment contentBytes.") from exc
    content_id = ci_get(item, "contentId")
    return AttachmentData(
        name=str(ci_get(item, "name") or "attachment"),
        content_type=str(ci_get(item, "contentType") or "application/octet-stream"),
        data=data,
        is_inline=bool(ci_get(item, "isInline")),
        content_id=str(content_id) if content_id else None,
    )


@dataclass(frozen=True)
class Prepared:
    raw: bytes
    from_address: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    message_id: str
    attachments: list[AttachmentData]

    @property
    def recipient_count(self) -> int:
        return len(self.to) + len(self.cc) + len(self.bcc)


def sender_of(message: dict[str, Any], mailbox: Mailbox) -> tuple[str, str]:
    """(address, From header value); `from` other than the mailbox needs Send As [doc]."""
    sender = ci_get(message, "from")
    inner = sender.get("emailAddress") if isinstance(sender, dict) else None
    address = str(inner.get("address") or "") if isinstance(inner, dict) else ""
    name = str(inner.get("name") or "") if isinstance(inner, dict) else ""
    if address and not mailbox.may_send_as(address):
        raise ge.send_as_denied()
    address = address or mailbox.address
    name = name or (mailbox.display_name if address.lower() == mailbox.address.lower() else "")
    entry = {"emailAddress": {"address": address, "name": name}}
    return address, format_address(entry)


def prepare(
    message: dict[str, Any],
    mailbox: Mailbox,
    now: float,
    extra: tuple[AttachmentData, ...] = (),
    *,
    message_id: str | None = None,
) -> Prepared:
    """Validate a JSON message the way Graph does and render the delivered RFC 5322 bytes."""
    if not isinstance(message, dict):
        raise GraphError(400, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty.")
    check_header_names(message)
    to = _addresses(message, "toRecipients")
    cc = _addresses(message, "ccRecipients")
    bcc = _addresses(message, "bccRecipients")
    _addresses(message, "replyTo")
    check_recipient_count(len(to) + len(cc) + len(bcc))
    from_address, from_header = sender_of(message, mailbox)
    raw_attachments = ci_get(message, "attachments") or []
    if not isinstance(raw_attachments, list):
        raise GraphError(400, "BadRequest", "attachments must be a collection.")
    attachments = [parse_attachment(a) for a in raw_attachments] + list(extra)
    message_id = message_id or new_message_id(mailbox)  # a draft keeps the id it got when it was created
    try:
        raw = build_message(
            _normalised(message), from_header=from_header, date=now, message_id=message_id, attachments=attachments
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise GraphError(400, "BadRequest", f"The message could not be rendered: {exc}") from exc
    return Prepared(raw, from_address, to, cc, bcc, str(ci_get(message, "subject") or ""), message_id, attachments)


def _normalised(message: dict[str, Any]) -> dict[str, Any]:
    keys = ("toRecipients", "ccRecipients", "replyTo", "subject", "importance", "internetMessageHeaders", "body")
    return {key: ci_get(message, key) for key in keys}
