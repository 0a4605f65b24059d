"""Backpressure: when the outbox is too deep or too old, ingress pushes back instead of growing without
limit. SMTP answers ``451 4.3.0`` (clients retry later), the API ``503`` with ``Retry-After``.

Bounds: ``max_queue_depth`` messages waiting (queued, deferred or sending) and ``max_queue_age`` seconds
for the oldest message that is simply queued for an active connector (mail deferred by a throttle or a
budget, and a paused connector's mail, wait on purpose and do not count). The figures are read from the
database at most once a second per process, so checking costs nothing on the hot path; several processes
on one PostgreSQL database see the same queue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import func, select

from ..clock import Clock
from ..db.engine import Database
from ..db.models import ConnectorRow, MessageRow
from .records import PENDING, QUEUED, SENDING

REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class Pressure:
    reason: str
    retry_after: int  # seconds a client should wait before trying again


class Backpressure:
    def __init__(self, db: Database, clock: Clock, *, max_depth: int, max_age_seconds: float) -> None:
        self.db = db
        self.clock = clock
        self.max_depth = max_depth
        self.max_age_seconds = max_age_seconds
        self._checked_at = -1e9
        self._current: Pressure | None = None
        self._lock = threading.Lock()

    def check(self) -> Pressure | None:
        """None when ingress may accept mail; otherwise why not and for how long to back off."""
        with self._lock:
            if self.clock.monotonic() - self._checked_at >= REFRESH_SECONDS:
                self._current = self._measure()
                self._checked_at = self.clock.monotonic()
            return self._current

    def _measure(self) -> Pressure | None:
        with self.db.read() as session:
            depth = int(session.scalar(select(func.count()).where(MessageRow.status.in_((*PENDING, SENDING)))) or 0)
            # Age counts only mail that nothing should be holding back: queued (not deferred for a throttle or
            # a spent budget) for an active connector. A paused connector's backlog must not shut the door on
            # every other connector — its mail simply waits, as DESIGN.md promises.
            oldest = session.scalar(
                select(func.min(MessageRow.created_at))
                .join(ConnectorRow, ConnectorRow.id == MessageRow.connector_id)
                .where(MessageRow.status == QUEUED, ConnectorRow.state == "active")
            )
        if depth >= self.max_depth:
            return Pressure(f"the outbox holds {depth} messages (limit {self.max_depth})", 60)
        if oldest is not None:
            from datetime import UTC

            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            age = (self.clock.now() - oldest).total_seconds()
            if age > self.max_age_seconds:
                return Pressure(f"the oldest waiting message is {age / 60:.0f} minutes old", 300)
        return None
