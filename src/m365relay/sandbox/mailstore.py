"""Captured mail: what Exchange would have delivered, kept in memory for tests and the viewer.

Bounded (newest `capacity` messages) so a benchmark cannot exhaust memory. Summaries of MIME
submissions are computed from the stored bytes only when someone asks for them.
"""

from __future__ import annotations

import email
import email.policy
from collections import OrderedDict
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from .clock import iso_z
from .rfc5322 import decode_words

DEFAULT_CAPACITY = 200_000


@dataclass(frozen=True)
class CapturedMessage:
    id: str
    mailbox: str
    client_id: str
    from_address: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    message_id: str
    received_at: float
    save_to_sent_items: bool
    request_id: str
    source: str  # "json" | "mime" | "draft"
    raw: bytes
    attachments: tuple[dict[str, Any], ...] | None = None  # None: derive from `raw` on demand

    @property
    def size(self) -> int:
        return len(self.raw)


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _attachments_of(parsed: EmailMessage) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    body_parts = {id(p) for p in (parsed.get_body(("html",)), parsed.get_body(("plain",))) if p}
    for part in parsed.walk():
        if part.is_multipart() or id(part) in body_parts:
            continue
        disposition = part.get_content_disposition()
        content_id = part.get("Content-ID")
        if part.get_filename() is None and disposition is None and content_id is None:
            continue
        payload = part.get_payload(decode=True)
        out.append(
            {
                "name": part.get_filename() or "",
                "content_type": part.get_content_type(),
                "size": len(payload) if isinstance(payload, bytes) else 0,
                "is_inline": disposition == "inline",
                "content_id": str(content_id).strip("<>") if content_id else None,
            }
        )
    return out


def summary(msg: CapturedMessage) -> dict[str, Any]:
    attachments = msg.attachments
    if attachments is None:
        attachments = tuple(_attachments_of(_parse(msg.raw)))
    return {
        "id": msg.id,
        "mailbox": msg.mailbox,
        "client_id": msg.client_id,
        "from": msg.from_address,
        "to": list(msg.to),
        "cc": list(msg.cc),
        "bcc": list(msg.bcc),
        "subject": msg.subject,
        "message_id": msg.message_id,
        "size": msg.size,
        "received_at": iso_z_ms(msg.received_at),
        "save_to_sent_items": msg.save_to_sent_items,
        "request_id": msg.request_id,
        "source": msg.source,
        "attachments": list(attachments),
    }


def iso_z_ms(moment: float) -> str:
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(moment, tz=UTC)
    return iso_z(stamp)[:-1] + f".{stamp.microsecond // 1000:03d}Z"


def detail(msg: CapturedMessage) -> dict[str, Any]:
    """The summary plus headers and the text/HTML bodies."""
    parsed = _parse(msg.raw)
    out = summary(msg)
    out["headers"] = [[name, decode_words(str(value))] for name, value in parsed.items()]
    for key, subtype in (("text", "plain"), ("html", "html")):
        part = parsed.get_body((subtype,))
        out[key] = part.get_content() if isinstance(part, EmailMessage) else None
    return out


class MailStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._messages: OrderedDict[str, CapturedMessage] = OrderedDict()

    def add(self, msg: CapturedMessage) -> None:
        self._messages[msg.id] = msg
        while len(self._messages) > self.capacity:
            self._messages.popitem(last=False)

    def get(self, message_id: str) -> CapturedMessage | None:
        return self._messages.get(message_id)

    def clear(self) -> None:
        self._messages.clear()

    def __len__(self) -> int:
        return len(self._messages)

    def query(
        self, *, mailbox: str | None = None, message_id: str | None = None, limit: int | None = None
    ) -> list[CapturedMessage]:
        """Newest first, optionally filtered by mailbox and Message-ID (with or without <>)."""
        wanted_id = message_id.strip().strip("<>") if message_id else None
        out: list[CapturedMessage] = []
        for msg in reversed(self._messages.values()):
            if mailbox and msg.mailbox.lower() != mailbox.lower():
                continue
            if wanted_id and msg.message_id.strip().strip("<>") != wanted_id:
                continue
            out.append(msg)
            if limit is not None and len(out) >= limit:
                break
        return out
