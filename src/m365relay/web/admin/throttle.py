"""Sign-in rate limiting per client address, counted from the audit log.

Failed sign-ins are audited anyway (``admin.login_failed`` with the address), so counting them there needs no
table of its own, survives restarts and holds across every ``serve`` process sharing the database. A
successful sign-in from the address starts the count afresh.
"""

from __future__ import annotations

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

    def check(self, remote_addr: str) -> Verdict:
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
        if len(times) < self.attempts:
            return Verdict(True, len(times))
        # Allowed again once enough failures have aged out that one more attempt fits.
        oldest_that_matters = _aware(times[len(times) - self.attempts])
        return Verdict(False, len(times), oldest_that_matters + self.window)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # aggregates bypass the column type
