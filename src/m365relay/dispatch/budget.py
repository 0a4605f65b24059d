"""Rolling request and recipient budgets per connector, kept in the database so that every process on
one database shares them (PROTOCOL.md §7: 10,000 requests per 10 minutes per app and mailbox; 10,000
recipients per rolling 24 hours per mailbox). Usage is counted in one-minute buckets.

When a send would exceed a budget the message is *deferred* until enough of the window has drained —
never failed: going over is Exchange's reason to stop the mailbox sending, not the message's fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..clock import Clock
from ..db.engine import Database
from ..db.models import BudgetBucketRow


@dataclass(frozen=True)
class BudgetLimits:
    requests: int = 10_000
    request_window: int = 600
    recipients: int = 10_000
    recipient_window: int = 86_400


class Budgets:
    def __init__(self, db: Database, clock: Clock, limits: BudgetLimits) -> None:
        self.db = db
        self.clock = clock
        self.limits = limits

    def reserve(self, connector_id: int, recipients: int, requests: int = 1) -> float | None:
        """Record the usage and return None, or return the seconds to wait if it would exceed a budget."""
        now = self.clock.now().timestamp()
        minute = int(now // 60)
        lim = self.limits
        with self.db.write() as session:
            buckets = session.execute(
                select(BudgetBucketRow.minute, BudgetBucketRow.requests, BudgetBucketRow.recipients)
                .where(
                    BudgetBucketRow.connector_id == connector_id,
                    BudgetBucketRow.minute > minute - lim.recipient_window // 60,
                )
                .order_by(BudgetBucketRow.minute)
            ).all()
            request_rows = [(m, r) for m, r, _ in buckets if m > minute - lim.request_window // 60]
            wait = max(
                _wait(request_rows, requests, lim.requests, lim.request_window, now),
                _wait([(m, n) for m, _, n in buckets], recipients, lim.recipients, lim.recipient_window, now),
            )
            if wait > 0:
                return wait
            self._add(session, connector_id, minute, requests, recipients)
            if minute % 60 == 0:  # now and then, forget buckets older than the longest window
                session.execute(
                    delete(BudgetBucketRow).where(
                        BudgetBucketRow.connector_id == connector_id,
                        BudgetBucketRow.minute <= minute - lim.recipient_window // 60,
                    )
                )
        return None

    def usage(self, connector_id: int) -> tuple[int, int]:
        """(requests in the request window, recipients in the recipient window)."""
        minute = int(self.clock.now().timestamp() // 60)
        with self.db.read() as session:

            def total(column: object, window: int) -> int:
                return int(
                    session.scalar(
                        select(func.coalesce(func.sum(column), 0)).where(
                            BudgetBucketRow.connector_id == connector_id,
                            BudgetBucketRow.minute > minute - window // 60,
                        )
                    )
                    or 0
                )

            return (
                total(BudgetBucketRow.requests, self.limits.request_window),
                total(BudgetBucketRow.recipients, self.limits.recipient_window),
            )

    def _add(self, session: Session, connector_id: int, minute: int, requests: int, recipients: int) -> None:
        dialect = postgresql if self.db.is_postgres else sqlite
        statement = dialect.insert(BudgetBucketRow).values(
            connector_id=connector_id, minute=minute, requests=requests, recipients=recipients
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[BudgetBucketRow.connector_id, BudgetBucketRow.minute],
                set_={
                    "requests": BudgetBucketRow.requests + requests,
                    "recipients": BudgetBucketRow.recipients + recipients,
                },
            )
        )


def _wait(rows: list[tuple[int, int]], wanted: int, budget: int, window: int, now: float) -> float:
    """Seconds until ``wanted`` more fit in the budget: the time the oldest buckets leave the window."""
    used = sum(n for _, n in rows)
    if used + wanted <= budget:
        return 0.0
    excess = used + wanted - budget
    for minute, count in rows:  # oldest first
        excess -= count
        if excess <= 0:
            return max(1.0, (minute + 1) * 60 + window - now)
    return float(window)  # a single send larger than the whole budget: wait a full window
