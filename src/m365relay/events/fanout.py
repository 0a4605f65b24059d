"""The hook on the outbox's event helper: an event that has subscribers becomes one pending delivery per
endpoint, written in the same transaction as the event (the transactional outbox pattern). A message that
was committed has its events queued for delivery too; one that rolled back has none.

Cost, since enqueue is the hot path (~1,000 messages a second):
- kinds no webhook carries (``claimed``, ``released``…) return before anything else;
- while the database has no endpoint at all, nothing is run: each DB-API connection remembers whether
  there is any for ``CACHE_SECONDS`` (in ``Connection.info``, which lives as long as the pooled
  connection), then asks again with one ``SELECT … LIMIT 1`` in the current transaction (a stale "some"
  costs only an insert of nothing);
- otherwise one ``INSERT … SELECT`` per event, which inserts nothing unless the message's connector has an
  enabled endpoint subscribed to that event (a bit test on ``event_mask``; a ``LIKE`` here made SQLite
  prepare the statement again on every call).

The cache stays correct across processes because an endpoint only takes events from ``active_from`` on —
``ACTIVATION_DELAY`` after it is added or re-enabled, longer than any connection trusts a cached "none".
An event that a process skipped on a stale "none" happened before that moment, so it was not owed.

The statement goes to the DB-API cursor directly: the enqueue path writes its rows that way (outbox/rawsql.py)
and the ~100 µs SQLAlchemy adds per statement matter at that rate.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from .kinds import FROM_OUTBOX_KIND, event_bit

CACHE_SECONDS = 1.0
ACTIVATION_DELAY = 2.0  # > CACHE_SECONDS, with a second to spare for clocks of different hosts
_CACHE_KEY = "m365relay.webhooks.any_endpoint"

_SQL = """
INSERT INTO webhook_deliveries (endpoint_id, event_type, occurred_at, message_ref, rfc_message_id,
    idempotency_key, connector_name, recipients, detail, request_id, status, attempts, next_attempt_at, created_at)
SELECT e.id, {type}, {at}, m.id, m.message_id, m.idempotency_key, c.name, m.recipients, {detail}, {rid},
    'pending', 0, {at}, {at}
FROM webhook_endpoints e
JOIN messages m ON m.id = {mid} AND m.connector_id = e.connector_id
JOIN connectors c ON c.id = m.connector_id
WHERE e.enabled = {yes} AND (e.event_mask & {bit}) <> 0 AND e.active_from <= {at}
"""
NAMES = ("type", "at", "detail", "rid", "mid", "yes", "bit")
ANY_ENDPOINT = "SELECT 1 FROM webhook_endpoints LIMIT 1"


def _render(style: str) -> str:
    return " ".join(_SQL.format(**{name: style.format(name) for name in NAMES}).split())


# sqlite3 takes :name, psycopg %(name)s — both with the same dict of values.
SQL = {"sqlite": _render(":{}"), "postgresql": _render("%({})s")}


def fan_out(
    session: Session, message_id: int, at: datetime, kind: str, detail: str | None, request_id: str | None = None
) -> None:
    """Queue deliveries of this event for every subscribed endpoint, in ``session``'s transaction."""
    event_type = FROM_OUTBOX_KIND.get(kind)
    if event_type is None:
        return
    connection = session.connection()
    info = connection.info
    known = info.get(_CACHE_KEY)  # (any endpoint?, until when this connection trusts that)
    now = time.monotonic()
    if known is not None and known[1] > now and not known[0]:
        return  # this connection saw no endpoint less than CACHE_SECONDS ago
    postgres = connection.dialect.name == "postgresql"
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if known is None or known[1] <= now:
            cursor.execute(ANY_ENDPOINT)
            found = cursor.fetchone() is not None
            info[_CACHE_KEY] = (found, now + CACHE_SECONDS)
            if not found:
                return
        naive = at.astimezone(UTC).replace(tzinfo=None)
        values: dict[str, Any] = {
            "type": event_type,
            # The text form SQLAlchemy's SQLite DateTime writes (comparable as text); PostgreSQL takes the datetime.
            "at": naive if postgres else naive.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "detail": detail,
            "rid": request_id,
            "mid": message_id,
            "yes": True,
            "bit": event_bit(event_type),
        }
        cursor.execute(SQL["postgresql" if postgres else "sqlite"], values)
    finally:
        cursor.close()
