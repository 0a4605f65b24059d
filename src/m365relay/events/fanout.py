"""The hook on the outbox's event helper: an event that has subscribers becomes one pending delivery per
endpoint, written in the same transaction as the event (the transactional outbox pattern). A message that
was committed has its events queued for delivery too; one that rolled back has none.

It is one ``INSERT … SELECT`` per event, which inserts nothing when the message's connector has no enabled
endpoint subscribed to that event. There is no per-process cache to go stale: an endpoint added by another
process is seen by the next statement that starts after that process committed (READ COMMITTED on
PostgreSQL; SQLite serialises writers). Kinds no webhook carries (``claimed``, ``released``…) return before
any SQL.

The statement goes to the DB-API cursor directly: the enqueue path writes its rows that way (outbox/rawsql.py)
and the ~100 µs SQLAlchemy would add per statement matter at 1,000 messages a second.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from .kinds import FROM_OUTBOX_KIND

_SQL = """
INSERT INTO webhook_deliveries (endpoint_id, webhook_id, event_type, occurred_at, message_ref, rfc_message_id,
    idempotency_key, connector_name, recipients, detail, request_id, status, attempts, next_attempt_at, created_at)
SELECT e.id, {p}wid || CAST(e.id AS VARCHAR(20)), {p}type, {p}at, m.id, m.message_id,
    m.idempotency_key, c.name, m.recipients, {p}detail, {p}rid, 'pending', 0, {p}at, {p}at
FROM webhook_endpoints e
JOIN messages m ON m.id = {p}mid AND m.connector_id = e.connector_id
JOIN connectors c ON c.id = m.connector_id
WHERE e.enabled = {p}yes AND e.events LIKE {p}pattern
"""
NAMES = ("wid", "type", "at", "detail", "rid", "mid", "yes", "pattern")


def _render(style: str) -> str:
    text = _SQL
    for name in NAMES:
        text = text.replace("{p}" + name, style.format(name))
    return " ".join(text.split())


# sqlite3 takes :name, psycopg %(name)s — both with the same dict of values.
SQL = {"sqlite": _render(":{}"), "postgresql": _render("%({})s")}


def params(
    message_id: int, at: datetime, kind: str, detail: str | None, request_id: str | None, *, postgres: bool
) -> dict[str, Any] | None:
    """The statement's values, or None when no webhook carries this kind."""
    event_type = FROM_OUTBOX_KIND.get(kind)
    if event_type is None:
        return None
    naive = at.astimezone(UTC).replace(tzinfo=None)
    return {
        # webhook-id: random per event, then the endpoint's id, so it is unique per (event, endpoint) and
        # stays the same on every retry and replay of that delivery (Standard Webhooks: idempotency key).
        "wid": f"msg_{secrets.token_urlsafe(16)}_",
        "type": event_type,
        # The same text form SQLAlchemy's SQLite DateTime writes; PostgreSQL takes the datetime itself.
        "at": naive if postgres else naive.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "detail": detail,
        "rid": request_id,
        "mid": message_id,
        "yes": True,
        "pattern": f"%,{event_type},%",
    }


def fan_out_cursor(
    cursor: Any,
    postgres: bool,
    message_id: int,
    at: datetime,
    kind: str,
    detail: str | None,
    request_id: str | None = None,
) -> None:
    """From the enqueue hot path, which already holds the transaction's DB-API cursor."""
    values = params(message_id, at, kind, detail, request_id, postgres=postgres)
    if values is not None:
        cursor.execute(SQL["postgresql" if postgres else "sqlite"], values)


def fan_out(
    session: Session, message_id: int, at: datetime, kind: str, detail: str | None, request_id: str | None = None
) -> None:
    """From ``outbox.store._event``: every other transition (sent, deferred, failed, bounced…)."""
    if kind not in FROM_OUTBOX_KIND:
        return
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        fan_out_cursor(cursor, postgres, message_id, at, kind, detail, request_id)
    finally:
        cursor.close()
