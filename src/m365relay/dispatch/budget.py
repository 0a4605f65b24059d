"""Rolling request and recipient budgets per connector and mailbox (PROTOCOL.md §15: each sending mailbox
of an app has its own; "" is the connector's User Name mailbox), kept in the database so that every process on
one database shares them (PROTOCOL.md §7: 10,000 requests per 10 minutes per app and mailbox; 10,000
recipients per rolling 24 hours per mailbox). Usage is counted in one-minute buckets.

A process leases budget in small chunks (counted in the database at once) and spends them locally, so
a send costs no database round trip most of the time. A chunk is spent within a minute of its lease; what
is left then, or when a send needs more than is left, or when the dispatcher stops, is given back to the
bucket it was counted in (in the same transaction as the next lease). Without that, a quiet relay sending
one message every few minutes would count a whole chunk per message and believe, after a hundred and fifty
messages, that the mailbox had used its 10,000 recipients for the day. Only a process that is killed loses
its unspent chunk (at most one per connector), which errs on the safe side.

When a send would exceed a budget the message is *deferred* until enough of the window has drained — never
failed: going over is Exchange's reason to stop the mailbox sending, not the message's fault.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from ..clock import Clock
from ..db.engine import Database
from ..db.models import BudgetBucketRow
from .gate import mailbox_number

CHUNK_REQUESTS = 32
CHUNK_RECIPIENTS = 64
ALLOWANCE_SECONDS = 60.0
BUDGET_LOCK_NAMESPACE = 0x6D34  # advisory lock namespace for budget leases ("m4")


@dataclass(frozen=True)
class BudgetLimits:
    requests: int = 10_000
    request_window: int = 600
    recipients: int = 10_000
    recipient_window: int = 86_400


@dataclass
class _Allowance:
    """What is left of one lease: counted in the database in bucket ``minute``, spendable until ``until``."""

    requests: int
    recipients: int
    until: float  # monotonic
    minute: int


class Budgets:
    def __init__(self, db: Database, clock: Clock, limits: BudgetLimits) -> None:
        self.db = db
        self.clock = clock
        self.limits = limits
        self._allowances: dict[tuple[int, str], _Allowance] = {}
        self._lock = threading.Lock()
        self._swept: dict[int, int] = {}  # connector id -> minute its old buckets were last deleted

    def reserve(self, connector_id: int, recipients: int, requests: int = 1, mailbox: str = "") -> float | None:
        """Spend budget for one send and return None, or return the seconds to wait before it fits.

        When the allowance in hand is short (or a minute old), its remainder is given back and a new chunk is
        leased in the same transaction, counted in the current minute: nothing is thrown away, and what is
        spent is never counted more than a minute before it was spent."""
        with self._lock:
            now = self.clock.monotonic()
            key = (connector_id, mailbox)
            allowance = self._allowances.get(key)
            if (
                allowance is not None
                and allowance.until > now
                and allowance.requests >= requests
                and allowance.recipients >= recipients
            ):
                allowance.requests -= requests
                allowance.recipients -= recipients
                return None
            wanted = (max(requests, CHUNK_REQUESTS), max(recipients, CHUNK_RECIPIENTS))
            # If this raises, nothing was committed: the allowance stays in hand, to be given back later.
            wait, granted, minute = self._lease(key, (requests, recipients), wanted, allowance)
            self._allowances.pop(key, None)  # given back in that transaction
            if wait is not None:
                return wait
            self._allowances[key] = _Allowance(
                granted[0] - requests, granted[1] - recipients, now + ALLOWANCE_SECONDS, minute
            )
            return None

    def release(self) -> None:
        """Give every unspent allowance back (the dispatcher calls this when it stops)."""
        with self._lock:
            for key in list(self._allowances):
                allowance = self._allowances[key]
                with self.db.write() as session:
                    self._give_back(session, key, allowance)
                del self._allowances[key]  # only once its give-back is committed

    def _give_back(self, session: Session, key: tuple[int, str], allowance: _Allowance | None) -> None:
        """Uncount what was leased but not spent, from the bucket it was counted in."""
        if allowance is None or (allowance.requests <= 0 and allowance.recipients <= 0):
            return
        clamp = func.greatest if self.db.is_postgres else func.max  # SQLite's two-argument max() is scalar
        session.execute(
            update(BudgetBucketRow)
            .where(_is_key(key), BudgetBucketRow.minute == allowance.minute)
            .values(
                requests=clamp(BudgetBucketRow.requests - max(0, allowance.requests), 0),
                recipients=clamp(BudgetBucketRow.recipients - max(0, allowance.recipients), 0),
            )
        )

    def usage(self, connector_id: int, mailbox: str = "") -> tuple[int, int]:
        """(requests counted in the request window, recipients in the recipient window) of one mailbox."""
        minute = int(self.clock.now().timestamp() // 60)
        key = (connector_id, mailbox)
        with self.db.read() as session:
            return (
                self._total(session, key, BudgetBucketRow.requests, minute, self.limits.request_window),
                self._total(session, key, BudgetBucketRow.recipients, minute, self.limits.recipient_window),
            )

    def _lease(
        self,
        key: tuple[int, str],
        needed: tuple[int, int],
        wanted: tuple[int, int],
        returning: _Allowance | None,
    ) -> tuple[float | None, tuple[int, int], int]:
        """Give ``returning``'s remainder back, then count (requests, recipients) against the windows: at least
        ``needed``, up to ``wanted``. One transaction. Returns the wait (None when granted), what was granted
        and the minute bucket it was counted in."""
        now = self.clock.now().timestamp()
        minute = int(now // 60)
        lim = self.limits
        connector_id = key[0]
        with self.db.write() as session:
            if self.db.is_postgres:  # one lease at a time per mailbox across processes (SQLite: BEGIN IMMEDIATE)
                session.execute(
                    text("SELECT pg_advisory_xact_lock(:ns, :id)"),
                    {"ns": BUDGET_LOCK_NAMESPACE, "id": mailbox_number(connector_id, key[1])},
                )
            self._give_back(session, key, returning)
            buckets = session.execute(
                select(BudgetBucketRow.minute, BudgetBucketRow.requests, BudgetBucketRow.recipients)
                .where(
                    _is_key(key),
                    BudgetBucketRow.minute > minute - max(lim.recipient_window, lim.request_window) // 60,
                )
                .order_by(BudgetBucketRow.minute)
            ).all()
            request_rows = [(m, r) for m, r, _ in buckets if m > minute - lim.request_window // 60]
            recipient_rows = [(m, n) for m, _, n in buckets if m > minute - lim.recipient_window // 60]
            wait = max(
                _wait(request_rows, needed[0], lim.requests, lim.request_window, now),
                _wait(recipient_rows, needed[1], lim.recipients, lim.recipient_window, now),
            )
            if wait > 0:
                return wait, (0, 0), minute
            granted = (
                max(needed[0], min(wanted[0], lim.requests - sum(n for _, n in request_rows))),
                max(needed[1], min(wanted[1], lim.recipients - sum(n for _, n in recipient_rows))),
            )
            self._add(session, key, minute, *granted)
            if minute - self._swept.get(connector_id, minute - 60) >= 60:  # hourly: forget buckets out of the windows
                self._swept[connector_id] = minute
                session.execute(
                    delete(BudgetBucketRow).where(
                        BudgetBucketRow.connector_id == connector_id,
                        BudgetBucketRow.minute <= minute - max(lim.recipient_window, lim.request_window) // 60,
                    )
                )
        return None, granted, minute

    @staticmethod
    def _total(
        session: Session, key: tuple[int, str], column: InstrumentedAttribute[int], minute: int, window: int
    ) -> int:
        value: int | None = session.scalar(
            select(func.coalesce(func.sum(column), 0)).where(
                _is_key(key), BudgetBucketRow.minute > minute - window // 60
            )
        )
        return int(value or 0)

    def _add(self, session: Session, key: tuple[int, str], minute: int, requests: int, recipients: int) -> None:
        dialect = postgresql if self.db.is_postgres else sqlite
        statement = dialect.insert(BudgetBucketRow).values(
            connector_id=key[0], mailbox=key[1], minute=minute, requests=requests, recipients=recipients
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[BudgetBucketRow.connector_id, BudgetBucketRow.mailbox, BudgetBucketRow.minute],
                set_={
                    "requests": BudgetBucketRow.requests + requests,
                    "recipients": BudgetBucketRow.recipients + recipients,
                },
            )
        )


def _is_key(key: tuple[int, str]) -> ColumnElement[bool]:
    return and_(BudgetBucketRow.connector_id == key[0], BudgetBucketRow.mailbox == key[1])


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
