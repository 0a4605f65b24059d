"""What the relay has been doing, per connector: mail accepted / sent / failed and deferrals per hour over
the last 24 hours and per day over the last 30, the queue's depth and oldest waiting message, the periods a
connector was paused, and how much of its credential's life is left. The dashboard draws it, and
``GET /api/v1/stats`` returns it.

Counting stays cheap however large the outbox grows. A closed hour (ended more than ``GRACE`` ago, so no
transaction still in flight can add to it) is counted once — four index-only range scans: accepted by
``ix_messages_created (created_at, connector_id)``, sent and failed by ``ix_messages_outcome (status,
updated_at, connector_id)``, deferrals by ``ix_message_events_kind_at`` — and its numbers are kept in
``activity_hours``. A view then reads at most 720 small rows per connector plus the open hour(s) counted
live. The counts of a closed hour stay as they were counted (retention deleting old mail later does not
rewrite history). Several processes may roll up at once: the primary key keeps one row per hour.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Executable, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .clock import Clock
from .connectors import ConnectorConfig
from .db.engine import Database
from .db.models import ActivityHourRow, AuditRow, ConnectorRow, MessageEventRow, MessageRow
from .outbox.records import DEFERRED, FAILED, PENDING, SENDING, SENT

HOUR = 3600
HOURS_SHOWN = 24
DAYS_SHOWN = 30
GRACE = timedelta(minutes=5)  # a transaction that began in an hour commits well within this
KEEP_HOURS = 24 * (DAYS_SHOWN + 5)
PAUSE_ACTIONS = ("connector.paused", "connector.resumed")
SERIES = ("accepted", "sent", "failed", "deferred")
ZERO = (0, 0, 0, 0)
BATCH_HOURS = 24


@dataclass(frozen=True)
class Counts:
    start: datetime  # start of the hour or day (UTC)
    accepted: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0

    def as_dict(self, *, day: bool = False) -> dict[str, Any]:
        when = self.start.date().isoformat() if day else self.start.isoformat()
        return {"date" if day else "start": when, **{name: getattr(self, name) for name in SERIES}}


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime | None  # None: still paused
    reason: str = ""


@dataclass(frozen=True)
class ConnectorActivity:
    connector: ConnectorConfig
    hours: list[Counts]  # HOURS_SHOWN, oldest first, the last one still open
    days: list[Counts]  # DAYS_SHOWN, oldest first, today last
    waiting: int
    sending: int
    oldest_waiting_at: datetime | None
    pauses: list[Period] = field(default_factory=list)

    def totals(self, series: str, *, days: bool = False) -> int:
        return sum(getattr(c, series) for c in (self.days if days else self.hours))


def hour_of(moment: datetime) -> int:
    return int(moment.timestamp()) // HOUR


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * HOUR, tz=UTC)


class Activity:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def report(self, connectors: Iterable[ConnectorConfig]) -> list[ConnectorActivity]:
        """The last 24 hours and 30 days of each connector (rolling up closed hours first)."""
        now = self.clock.now()
        self.rollup(now)
        connectors = list(connectors)
        first_hour = hour_of(now) - (DAYS_SHOWN - 1) * 24 - now.hour
        with self.db.read() as session:
            stored = _stored(session, first_hour)
            live = {h: _count_hour(session, h, now) for h in range(hour_of(now) - 1, hour_of(now) + 1)}
            queue = _queue(session)
            oldest = _oldest_waiting(session)
            pauses = _pauses(session, now - timedelta(days=DAYS_SHOWN))
        out = []
        for c in connectors:
            per_hour = {h: counts for (cid, h), counts in stored.items() if cid == c.id}
            for h, counted in live.items():
                if h not in per_hour or h == hour_of(now):
                    per_hour[h] = counted.get(c.id, ZERO)
            out.append(
                ConnectorActivity(
                    connector=c,
                    hours=_hours(per_hour, hour_of(now)),
                    days=_days(per_hour, now.date()),
                    waiting=sum(queue.get((c.id, s), 0) for s in PENDING),
                    sending=queue.get((c.id, SENDING), 0),
                    oldest_waiting_at=oldest.get(c.id),
                    pauses=_periods(pauses.get(c.name, []), c, now),
                )
            )
        return out

    def rollup(self, now: datetime | None = None) -> int:
        """Count and keep every closed hour of the window not kept yet. Returns how many hours were added.

        Hours before the oldest message in the outbox hold nothing and are not stored (a missing hour
        reads as zero); the rest go in batches of a day per transaction, so a first look at a large
        outbox does not hold the database's write lock for long."""
        now = now or self.clock.now()
        last_closed = hour_of(now - GRACE) - 1
        first = last_closed - KEEP_HOURS + 1
        with self.db.read() as session:
            oldest = session.scalar(select(func.min(MessageRow.created_at)))
            if oldest is None:
                return 0
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            done = set(session.scalars(select(ActivityHourRow.hour).distinct().where(ActivityHourRow.hour >= first)))
        missing = [h for h in range(max(first, hour_of(oldest)), last_closed + 1) if h not in done]
        added = sum(self._roll_hours(missing[i : i + BATCH_HOURS]) for i in range(0, len(missing), BATCH_HOURS))
        if added:
            with self.db.write() as session:
                session.execute(delete(ActivityHourRow).where(ActivityHourRow.hour < first))
        return added

    def _roll_hours(self, hours: list[int]) -> int:
        try:
            with self.db.write() as session:
                taken = set(
                    session.scalars(select(ActivityHourRow.hour).distinct().where(ActivityHourRow.hour.in_(hours)))
                )
                connector_ids = list(session.scalars(select(ConnectorRow.id)))
                todo = [h for h in hours if h not in taken]
                for hour in todo:
                    counted = _count_hour(session, hour, hour_start(hour + 1))
                    session.add_all(
                        ActivityHourRow(
                            connector_id=cid, hour=hour, **dict(zip(SERIES, counted.get(cid, ZERO), strict=True))
                        )
                        for cid in connector_ids
                    )
        except IntegrityError:
            return 0  # another process kept some of these hours first; the rest are kept on the next look
        return len(todo)


def hour_statements(start: datetime, end: datetime) -> list[Executable]:
    """The four counts of [start, end) per connector: accepted, sent, failed, deferred (each index-only)."""
    m, e = MessageRow, MessageEventRow
    per_connector = (m.connector_id, func.count())
    return [
        select(*per_connector).where(m.created_at >= start, m.created_at < end).group_by(m.connector_id),
        *(
            select(*per_connector)
            .where(m.status == status, m.updated_at >= start, m.updated_at < end)
            .group_by(m.connector_id)
            for status in (SENT, FAILED)
        ),
        select(*per_connector)
        .select_from(e)
        .join(m, m.id == e.message_id)
        .where(e.kind == DEFERRED, e.at >= start, e.at < end)
        .group_by(m.connector_id),
    ]


def view_statements() -> list[Executable]:
    """What every view reads besides the kept hours: the queue per connector and its oldest waiting message."""
    m = MessageRow
    return [
        select(m.connector_id, m.status, func.count())
        .where(m.status.in_((*PENDING, SENDING)))
        .group_by(m.connector_id, m.status),
        select(m.connector_id, func.min(m.created_at)).where(m.status.in_(PENDING)).group_by(m.connector_id),
    ]


def _count_hour(session: Session, hour: int, until: datetime) -> dict[int, tuple[int, int, int, int]]:
    """(accepted, sent, failed, deferred) per connector in [start of ``hour``, ``until``)."""
    start, end = hour_start(hour), min(until, hour_start(hour + 1))
    out: dict[int, list[int]] = {}
    for index, statement in enumerate(hour_statements(start, end)):
        for connector_id, count in session.execute(statement):
            out.setdefault(connector_id, [0, 0, 0, 0])[index] += int(count)
    return {cid: (v[0], v[1], v[2], v[3]) for cid, v in out.items()}


def _stored(session: Session, first_hour: int) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    r = ActivityHourRow
    rows = session.execute(
        select(r.connector_id, r.hour, r.accepted, r.sent, r.failed, r.deferred).where(r.hour >= first_hour)
    )
    return {(cid, hour): (a, s, f, d) for cid, hour, a, s, f, d in rows}


def _queue(session: Session) -> dict[tuple[int, str], int]:
    return {(cid, status): int(count) for cid, status, count in session.execute(view_statements()[0])}


def _oldest_waiting(session: Session) -> dict[int, datetime]:
    out = {}
    for cid, oldest in session.execute(view_statements()[1]):
        if oldest is not None:
            out[cid] = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)  # aggregates skip the column type
    return out


def _pauses(session: Session, since: datetime) -> dict[str, list[tuple[datetime, str, str]]]:
    a = AuditRow
    rows = session.execute(
        select(a.target, a.at, a.action, a.detail)
        .where(a.at >= since, a.action.in_(PAUSE_ACTIONS))
        .order_by(a.at, a.id)
    )
    out: dict[str, list[tuple[datetime, str, str]]] = {}
    for target, at, action, detail in rows:
        reason = str((detail or {}).get("error") or "") if action == "connector.paused" else ""
        out.setdefault(target or "", []).append((at, action, reason))
    return out


def _periods(events: list[tuple[datetime, str, str]], connector: ConnectorConfig, now: datetime) -> list[Period]:
    periods: list[Period] = []
    start: datetime | None = None
    reason = ""
    window = now - timedelta(days=DAYS_SHOWN)
    for at, action, why in events:
        if action == "connector.paused" and start is None:
            start, reason = at, why
        elif action == "connector.resumed":
            periods.append(Period(start or window, at, reason))  # no start in the window: it began earlier
            start = None
    if start is not None or (connector.paused and not periods and not events):
        began = start or connector.state_changed_at or window
        periods.append(Period(max(began, window), None, reason or (connector.state_error_kind or "")))
    return periods


def _hours(per_hour: dict[int, tuple[int, int, int, int]], current: int) -> list[Counts]:
    return [
        Counts(hour_start(h), *per_hour.get(h, (0, 0, 0, 0))) for h in range(current - HOURS_SHOWN + 1, current + 1)
    ]


def _days(per_hour: dict[int, tuple[int, int, int, int]], today: date) -> list[Counts]:
    sums: dict[date, list[int]] = {}
    for hour, values in per_hour.items():
        day = hour_start(hour).date()
        bucket = sums.setdefault(day, [0, 0, 0, 0])
        for i, value in enumerate(values):
            bucket[i] += value
    out = []
    for back in range(DAYS_SHOWN - 1, -1, -1):
        day = today - timedelta(days=back)
        v = sums.get(day, [0, 0, 0, 0])
        out.append(Counts(datetime(day.year, day.month, day.day, tzinfo=UTC), v[0], v[1], v[2], v[3]))
    return out


def stats_view(item: ConnectorActivity, now: datetime) -> dict[str, Any]:
    """The JSON shape of ``GET /api/v1/stats`` (and the overview's tables) for one connector."""
    c = item.connector
    cred = c.credential
    lifetime = (cred.expires_at.date() - cred.created_at.date()).days if cred and cred.expires_at else None
    oldest = item.oldest_waiting_at
    return {
        "id": c.id,
        "name": c.name,
        "state": c.state,
        "hours": [h.as_dict() for h in item.hours],
        "days": [d.as_dict(day=True) for d in item.days],
        "queue": {
            "waiting": item.waiting,
            "sending": item.sending,
            "oldest_waiting_at": oldest.isoformat() if oldest else None,
            "oldest_waiting_seconds": max(0.0, (now - oldest).total_seconds()) if oldest else None,
        },
        "pauses": [
            {"start": p.start.isoformat(), "end": p.end.isoformat() if p.end else None, "reason": p.reason}
            for p in item.pauses
        ],
        "credential": {
            "expires_at": cred.expires_at.isoformat() if cred and cred.expires_at else None,
            "days_left": cred.days_left(now) if cred else None,
            "lifetime_days": lifetime,
        },
    }
