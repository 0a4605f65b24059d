"""What the outbox hands out: frozen records read from the database."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..db.models import MessageEventRow, MessageRow
from ..errors import CorruptMessageError

CorruptRecord = CorruptMessageError
BODY_MISMATCH = "its stored bytes do not match the checksum taken when it was accepted"

QUEUED, SENDING, DEFERRED, SENT, FAILED, CANCELLED = "queued", "sending", "deferred", "sent", "failed", "cancelled"
STATUSES = (QUEUED, SENDING, DEFERRED, SENT, FAILED, CANCELLED)
PENDING = (QUEUED, DEFERRED)  # waiting for an attempt
FINAL = (SENT, FAILED, CANCELLED)


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str
    detail: str | None
    request_id: str | None

    @classmethod
    def from_row(cls, row: MessageEventRow) -> Event:
        return cls(row.at, row.kind, row.detail, row.request_id)


@dataclass(frozen=True)
class LastError:
    kind: str
    code: str | None
    status: int | None
    request_id: str | None
    message: str | None
    remedy: str | None


@dataclass(frozen=True)
class MessageRecord:
    id: int
    connector_id: int
    status: str
    envelope_from: str | None
    recipients: tuple[str, ...]
    subject: str | None
    header_from: str | None
    message_id: str | None
    size: int
    save_to_sent_items: bool
    source: str
    source_detail: str | None
    idempotency_key: str | None
    attempts: int
    next_attempt_at: datetime
    expires_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: LastError | None
    graph_request_id: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    events: tuple[Event, ...] = field(default=())

    @classmethod
    def from_row(cls, row: MessageRow, events: list[MessageEventRow] | None = None) -> MessageRecord:
        last_error = None
        if row.last_error_kind:
            last_error = LastError(
                row.last_error_kind,
                row.last_error_code,
                row.last_error_status,
                row.last_error_request_id,
                row.last_error_message,
                row.last_error_remedy,
            )
        return cls(
            id=row.id,
            connector_id=row.connector_id,
            status=row.status,
            envelope_from=row.envelope_from,
            recipients=readable_recipients(row.recipients),
            subject=row.subject,
            header_from=row.header_from,
            message_id=row.message_id,
            size=row.size,
            save_to_sent_items=row.save_to_sent_items,
            source=row.source,
            source_detail=row.source_detail,
            idempotency_key=row.idempotency_key,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            expires_at=row.expires_at,
            lease_owner=row.lease_owner,
            lease_expires_at=row.lease_expires_at,
            last_error=last_error,
            graph_request_id=row.graph_request_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            sent_at=row.sent_at,
            events=tuple(Event.from_row(e) for e in events or ()),
        )

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def public_view(self) -> dict[str, Any]:
        """The message as the API and `queue show --json` present it (never the body)."""
        return {
            "id": self.id,
            "connector_id": self.connector_id,
            "status": self.status,
            "envelope_from": self.envelope_from,
            "recipients": list(self.recipients),
            "subject": self.subject,
            "from": self.header_from,
            "message_id": self.message_id,
            "size": self.size,
            "save_to_sent_items": self.save_to_sent_items,
            "source": self.source,
            "source_detail": self.source_detail,
            "idempotency_key": self.idempotency_key,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.status in PENDING else None,
            "expires_at": self.expires_at.isoformat(),
            "graph_request_id": self.graph_request_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "last_error": None
            if self.last_error is None
            else {
                "kind": self.last_error.kind,
                "code": self.last_error.code,
                "status": self.last_error.status,
                "request_id": self.last_error.request_id,
                "message": self.last_error.message,
                "remedy": self.last_error.remedy,
            },
            "events": [
                {"at": e.at.isoformat(), "kind": e.kind, "detail": e.detail, "request_id": e.request_id}
                for e in self.events
            ],
        }


@dataclass(frozen=True)
class Claimed:
    """A message leased to one worker for one attempt."""

    id: int
    connector_id: int
    recipients: tuple[str, ...]
    recipient_count: int
    size: int
    save_to_sent_items: bool
    attempts: int
    created_at: datetime
    expires_at: datetime
    message_id: str | None
    body: bytes | None = field(default=None, repr=False)  # small messages come with their bytes (one query less)
    body_sha256: str | None = field(default=None, repr=False)  # None: stored before checksums were kept
    doubt_since: datetime | None = None  # the last attempt's outcome is unknown (outbox/doubt.py)
    draft_id: str | None = None  # the draft of a large message's in-doubt attempt
    draft_message_id: str | None = None
    header_from: str | None = None  # From after the policy: it chooses the sending mailbox (PROTOCOL.md §15)

    @classmethod
    def from_claim(cls, row: Mapping[Any, Any], body: bytes | None) -> Claimed:
        """A claimed row, checked: a damaged row raises ``CorruptRecord`` instead of reaching Graph."""
        recipients = row["recipients"]
        if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) for r in recipients):
            raise CorruptRecord(f"its recipients are not a list of addresses ({type(recipients).__name__})")
        for name in ("size", "attempts", "recipient_count"):
            if not isinstance(row[name], int):
                raise CorruptRecord(f"its {name} is not a number")
        if body is not None:
            check_body(row["body_sha256"], [body])
        fields = {k: row[k] for k in _CLAIM_FIELDS}
        return cls(**fields, recipients=tuple(recipients), body=body, body_sha256=row["body_sha256"])


_CLAIM_FIELDS = (
    "id", "connector_id", "recipient_count", "size", "save_to_sent_items", "attempts", "created_at", "expires_at",
    "message_id", "doubt_since", "draft_id", "draft_message_id", "header_from",
)  # fmt: skip


def readable_recipients(value: object) -> tuple[str, ...]:
    """The addresses of a row, for views: a damaged value shows as none (the claim fails such a message
    with the reason), so that listing or showing it never breaks."""
    if isinstance(value, list):
        return tuple(r for r in value if isinstance(r, str))
    return ()


def body_digest(chunks: Iterable[bytes]) -> str:
    """SHA-256 of the stored bytes (header chunk and body chunks, in order), hex."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def check_body(expected: str | None, chunks: Iterable[bytes]) -> None:
    """Raise ``CorruptRecord`` when stored bytes no longer match the checksum taken at acceptance."""
    if expected is not None and body_digest(chunks) != expected:
        raise CorruptRecord(BODY_MISMATCH)


@dataclass(frozen=True)
class EnqueueResult:
    id: int
    created: bool  # False: an earlier message with the same idempotency key and content


@dataclass(frozen=True)
class QueueStats:
    by_status: dict[str, int]
    oldest_pending_at: datetime | None
    by_connector: dict[int, dict[str, int]]
