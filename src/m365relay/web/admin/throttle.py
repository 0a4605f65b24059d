"""Sign-in rate limiting per client address, counted from the audit log.

Failed sign-ins are audited anyway (``admin.login_failed`` with the address), so counting them there needs no
table of its own, survives restarts and holds across every ``serve`` process sharing the database. A
successful sign-in from the address starts the count afresh.

Sign-ins that are being checked right now count as failures until their outcome is recorded (``begin`` /
``end``, as the SMTP AUTH limiter does): otherwise 20 parallel wrong passwords would all pass ``check``
before the first failure was written, and all 20 would be verified. The reservation is per process; N
``serve`` processes let at most N sign-ins per address be checked at the same moment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from ...clock import Clock
from ...db.engine import Database
from ...db.models import AuditRow

WINDOW = timedelta(minutes=15)
FAILED, SIGNED_IN = "admin.login_failed", "admin.login"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    failures: int
    retry_at: datetime | None = None  # when the oldest counted failure leaves the window


class LoginThrottle:
    def __init__(self, db: Database, clock: Clock, attempts: int, window: timedelta = WINDOW) -> None:
        self.db = db
        self.clock = clock
        self.attempts = attempts
        self.window = window
        self._lock = threading.Lock()
        self._checking: dict[str, int] = {}  # sign-ins between their check and their recorded outcome

    @contextmanager
    def attempt(self, remote_addr: str) -> Iterator[Verdict]:
        """Check and reserve in one step. Inside the block the attempt counts as a failure; record its
        outcome (the audit row) before leaving the block so it is never counted twice or not at all."""
        with self._lock:
            verdict = self.check(remote_addr, pending=self._checking.get(remote_addr, 0))
            if verdict.allowed:
                self._checking[remote_addr] = self._checking.get(remote_addr, 0) + 1
        try:
            yield verdict
        finally:
            if verdict.allowed:
                with self._lock:
                    left = self._checking.get(remote_addr, 1) - 1
                    if left > 0:
                        self._checking[remote_addr] = left
                    else:
                        self._checking.pop(remote_addr, None)

    def check(self, remote_addr: str, *, pending: int = 0) -> Verdict:
        now = self.clock.now()
        since = now - self.window
        with self.db.read() as session:
            last_success = session.scalar(
                select(func.max(AuditRow.at)).where(
                    AuditRow.action == SIGNED_IN, AuditRow.remote_addr == remote_addr, AuditRow.at >= since
                )
            )
            if last_success is not None:
                since = max(since, _aware(last_success))
            times = list(
                session.scalars(
                    select(AuditRow.at)
                    .where(AuditRow.action == FAILED, AuditRow.remote_addr == remote_addr, AuditRow.at > since)
                    .order_by(AuditRow.at)
                )
            )
        if len(times) + pending < self.attempts:
            return Verdict(True, len(times))
        if len(times) < self.attempts:  # blocked by sign-ins still being checked: a moment, not a window
            return Verdict(False, len(times) + pending, now)
        # Allowed again once enough failures have aged out that one more attempt fits.
        oldest_that_matters = _aware(times[len(times) - self.attempts])
        return Verdict(False, len(times), oldest_that_matters + self.window)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # aggregates bypass the column type
