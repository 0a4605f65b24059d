"""``GET /messages``: filters with absolute times, newest first, and an opaque cursor.

The cursor wraps the last id of the page (``before_id`` keyset pagination: stable while new mail arrives,
no OFFSET scans). It is opaque so that its form may change; clients pass it back with the same filters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator
from sqlalchemy import String, and_, cast, select

from ...db.engine import Database
from ...db.models import MessageRow
from ...errors import ValidationError
from ...outbox import MessageRecord
from ...outbox.recipients import status_condition


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    connector_id: int | None = None
    recipient: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class Page:
    items: list[MessageRecord]
    next_before_id: int | None


# The cursor is the id the next page starts below, in decimal: every string the schema allows is one the
# server accepts (the filters and the key's connector binding still apply, so a made-up one reveals nothing).
CURSOR_PATTERN = r"^[1-9][0-9]{0,17}$"


def _iso_only(value: object) -> object:
    """Only ISO 8601 text: pydantic would also read ``0.5`` or ``1700000000`` as a Unix time."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be an ISO 8601 date-time such as 2026-12-01T10:00:00Z")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]


def encode_cursor(before_id: int) -> str:
    return str(before_id)


def decode_cursor(cursor: str) -> int:
    before = int(cursor) if re.fullmatch(CURSOR_PATTERN, cursor) else None
    if before is None or not 0 < before < 2**63:
        raise ValidationError("cursor", "is not a cursor this API issued; pass `next` from the previous page")
    return before


def list_messages(db: Database, filters: Filters, *, before_id: int | None, limit: int) -> Page:
    conditions = []
    if filters.status:
        conditions.append(status_condition(filters.status))
    if filters.connector_id is not None:
        conditions.append(MessageRow.connector_id == filters.connector_id)
    if filters.recipient:
        pattern = f"%{_like_escape(filters.recipient.lower())}%"
        conditions.append(cast(MessageRow.recipients, String).ilike(pattern, escape="\\"))
    if filters.created_after is not None:
        conditions.append(MessageRow.created_at >= filters.created_after)
    if filters.created_before is not None:
        conditions.append(MessageRow.created_at < filters.created_before)
    if before_id is not None:
        conditions.append(MessageRow.id < before_id)
    query = select(MessageRow).order_by(MessageRow.id.desc()).limit(limit + 1)
    if conditions:
        query = query.where(and_(*conditions))
    with db.read() as session:
        rows = list(session.scalars(query))
    items = [MessageRecord.from_row(row) for row in rows[:limit]]
    return Page(items, items[-1].id if len(rows) > limit else None)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
