"""RFC 5322 → Graph's JSON ``message`` resource (PROTOCOL.md §5), for the two sends that need JSON: a send
with ``saveToSentItems=false`` and the draft of a large message whose attachments go up in upload
sessions. Works on the streaming MIME tree (``mimewalk``), so large bodies are never read whole.

What JSON cannot carry (Graph's rules, not ours): custom headers whose names do not start with ``x-``
(dropped, listed in ``dropped_headers``), threading headers (In-Reply-To, References), and the exact
MIME layout. The default MIME send keeps all of these.
"""

from __future__ import annotations

import base64
import mimetypes
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, BinaryIO

from ..addresses import Mailbox
from .mime import OutgoingMessage
from .mimewalk import Part, read_decoded, walk_body

STANDARD_HEADERS = {
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "importance",
    "x-priority",
    "sender",
    "received",
    "return-path",
    "in-reply-to",
    "references",
    "content-disposition",
}


@dataclass
class Attachment:
    part: Part
    name: str
    content_type: str
    is_inline: bool
    content_id: str | None


@dataclass
class Converted:
    message: dict[str, Any]  # Graph message resource without attachments
    attachments: list[Attachment]
    dropped_headers: list[str] = field(default_factory=list)


def convert(outgoing: OutgoingMessage, mailbox: str) -> Converted:
    """The Graph message resource for ``outgoing``; attachment bodies stay in the stream."""
    headers = outgoing.headers
    tree = walk_body(outgoing.body, headers, outgoing.body_offset)
    body_part, attachments = _split(tree)
    message: dict[str, Any] = {
        "subject": str(headers.get("Subject", "") or ""),
        "body": _body(outgoing.body, body_part),
        "toRecipients": _recipients(outgoing, "To"),
        "ccRecipients": _recipients(outgoing, "Cc"),
        "bccRecipients": _recipients(outgoing, "Bcc"),
        "replyTo": _recipients(outgoing, "Reply-To"),
    }
    sender = outgoing.mailboxes("From")  # raw values: the parsed view decodes RFC 2047 words before splitting
    if sender and sender[0].addr_spec.lower() != mailbox.lower():
        message["from"] = _recipient(sender[0])
    importance = _importance(headers)
    if importance:
        message["importance"] = importance
    custom, dropped = [], []
    for name, value in headers.items():
        if name.lower().startswith("x-"):
            custom.append({"name": name, "value": str(value)})
        elif name.lower() not in STANDARD_HEADERS:
            dropped.append(name)
    if custom:
        message["internetMessageHeaders"] = custom
    return Converted(message, attachments, dropped)


def attachment_json(stream: BinaryIO, attachment: Attachment) -> dict[str, Any]:
    """A ``fileAttachment`` with its content inline (attachments under 3 MB)."""
    item: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": attachment.name,
        "contentType": attachment.content_type,
        "contentBytes": base64.b64encode(read_decoded(stream, attachment.part)).decode("ascii"),
        "isInline": attachment.is_inline,
    }
    if attachment.content_id:
        item["contentId"] = attachment.content_id
    return item


def _split(tree: Part) -> tuple[Part | None, list[Attachment]]:
    leaves = list(tree.leaves())
    candidates = [p for p in leaves if _is_body_text(p)]
    html = next((p for p in candidates if p.content_type == "text/html"), None)
    body = html or next((p for p in candidates if p.content_type == "text/plain"), None)
    # The plain-text alternative of an HTML body is the same text: not an attachment.
    alternatives = {
        id(p) for p in candidates if body is not None and p is not body and _same_alternative(tree, p, body)
    }
    attachments = []
    for index, part in enumerate(leaves, start=1):
        if part is body or id(part) in alternatives:
            continue
        attachments.append(
            Attachment(
                part=part,
                name=part.filename or _default_name(part, index),
                content_type=part.content_type,
                is_inline=part.disposition == "inline" or (part.content_id is not None and part.disposition is None),
                content_id=part.content_id,
            )
        )
    return body, attachments


def _is_body_text(part: Part) -> bool:
    return part.content_type in ("text/plain", "text/html") and part.disposition != "attachment" and not part.filename


def _same_alternative(tree: Part, a: Part, b: Part) -> bool:
    """True when a and b are children of one multipart/alternative (directly or via multipart/related)."""
    for node in _nodes(tree):
        if node.content_type == "multipart/alternative":
            inside = {id(leaf) for leaf in node.leaves()}
            if id(a) in inside and id(b) in inside:
                return True
    return False


def _nodes(part: Part) -> list[Part]:
    out = [part]
    for child in part.children:
        out += _nodes(child)
    return out


def _body(stream: BinaryIO, part: Part | None) -> dict[str, str]:
    if part is None:
        return {"contentType": "Text", "content": ""}
    charset = part.headers.get_content_charset() or "utf-8"
    raw = read_decoded(stream, part)
    try:
        text = raw.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = raw.decode("utf-8", errors="replace")
    return {"contentType": "HTML" if part.content_type == "text/html" else "Text", "content": text}


def _recipients(outgoing: OutgoingMessage, name: str) -> list[dict[str, Any]]:
    return [_recipient(a) for a in outgoing.mailboxes(name)]


def _recipient(address: Mailbox) -> dict[str, Any]:
    entry: dict[str, str] = {"address": address.addr_spec}
    if address.display_name:
        entry["name"] = address.display_name
    return {"emailAddress": entry}


def _importance(headers: EmailMessage) -> str | None:
    value = str(headers.get("Importance", "") or "").strip().lower()
    if value in ("low", "normal", "high"):
        return value
    priority = str(headers.get("X-Priority", "") or "").strip()[:1]
    return {"1": "high", "2": "high", "4": "low", "5": "low"}.get(priority)


def _default_name(part: Part, index: int) -> str:
    if part.content_type == "message/rfc822":
        return f"attachment{index}.eml"
    extension = mimetypes.guess_extension(part.content_type) or ".bin"
    return f"attachment{index}{extension}"
