"""Ingress pushes back when the outbox is too deep or its oldest message too old (``max_queue_depth``,
``max_queue_age``): the API answers 503 ``queue-full`` with ``Retry-After`` instead of accepting mail it
cannot send in reasonable time. The figures are re-read at most every ``ttl`` seconds, not per request.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ...db.models import MessageRow
from ...outbox import PENDING
from ..problems import ProblemError

if TYPE_CHECKING:
    from ...runtime import Runtime

RETRY_AFTER_SECONDS = 30


class Backpressure:
    def __init__(self, runtime: Runtime, *, max_depth: int, max_age: float, ttl: float = 2.0) -> None:
        self.runtime = runtime
        self.max_depth = max_depth
        self.max_age = max_age
        self.ttl = ttl
        self._verdict: str | None = None
        self._at = -1e9
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise the 503 problem when ingress must push back (runs in a worker thread: it may query)."""
        with self._lock:
            stale = time.monotonic() - self._at >= self.ttl
            verdict = self._verdict
        if stale:
            verdict = self._measure()
            with self._lock:
                self._verdict, self._at = verdict, time.monotonic()
        if verdict is not None:
            raise ProblemError("queue-full", verdict, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    def _measure(self) -> str | None:
        depth = self.runtime.outbox.pending_count()
        if depth >= self.max_depth:
            return f"{depth} messages are waiting (the limit is {self.max_depth}); retry later."
        with self.runtime.db.read() as session:
            oldest = session.scalar(select(func.min(MessageRow.created_at)).where(MessageRow.status.in_(PENDING)))
        if oldest is None:
            return None
        age = (self.runtime.clock.now().replace(tzinfo=None) - oldest.replace(tzinfo=None)).total_seconds()
        if age >= self.max_age:
            return (
                f"the oldest waiting message is {int(age)} s old (the limit is {int(self.max_age)} s); "
                "mail is not leaving — check the connectors' state — and retry later."
            )
        return None
