"""Claiming and leases: how workers take due messages, keep them while they work, and give back the
leases of workers that died; and expiry, which ends mail that waited past its queue lifetime.

A claim is one statement (STYLE.md §5): ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)
RETURNING`` on PostgreSQL, the same under ``BEGIN IMMEDIATE`` on SQLite. Rows are turned into ``Claimed``
records one by one after the claim: a row that cannot be read (a damaged ``recipients`` column, a body
whose checksum does not match) is failed on its own with the reason, and the rest of the claim proceeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from typing import cast as type_cast

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.orm import Session

from ..clock import Clock
from ..db.engine import Database
from ..db.models import MessageChunkRow, MessageEventRow, MessageRow
from .doubt import IN_DOUBT, TAKEOVER_DETAIL, taken_over, takeover_values
from .records import DEFERRED, FAILED, PENDING, SENDING, Claimed, CorruptRecord, body_digest

log = logging.getLogger("m365relay.outbox")
T = TypeVar("T")
EVENTS = type_cast(Table, MessageEventRow.__table__)
INLINE_BODY_BYTES = 256 * 1024  # claimed messages up to this size come with their bytes

CLAIM_COLUMNS = (
    MessageRow.id,
    MessageRow.connector_id,
    MessageRow.recipients,
    MessageRow.recipient_count,
    MessageRow.size,
    MessageRow.save_to_sent_items,
    MessageRow.attempts,
    MessageRow.created_at,
    MessageRow.expires_at,
    MessageRow.message_id,
    MessageRow.body_sha256,
    MessageRow.doubt_since,
    MessageRow.draft_id,
    MessageRow.draft_message_id,
    MessageRow.header_from,
)


class Claims:
    """The claiming half of ``Outbox`` (which supplies the database, the clock and the writer)."""

    db: Database
    clock: Clock
    max_queue_lifetime: timedelta

    def _write(self, fn: Callable[[Session], T], *, isolate: bool = False) -> T:
        raise NotImplementedError

    def claim(
        self, owner: str, connector_id: int, limit: int, lease_seconds: float, *, early: bool = False
    ) -> list[Claimed]:
        """Lease up to ``limit`` due messages of one connector to ``owner``, oldest due first. Messages whose
        lease expired (their worker died) are due again. One statement: on PostgreSQL the inner SELECT takes
        ``FOR UPDATE SKIP LOCKED``, so concurrent workers never claim the same message.

        ``early``: take waiting messages even before their next attempt is due (a probe after an outage)."""
        if limit <= 0:
            return []
        now = self.clock.now()
        waiting = MessageRow.status.in_(PENDING)
        due = or_(
            waiting if early else and_(waiting, MessageRow.next_attempt_at <= now),
            and_(MessageRow.status == SENDING, MessageRow.lease_expires_at < now),
        )
        candidates = (
            select(MessageRow.id)
            .where(MessageRow.connector_id == connector_id, due)
            .order_by(MessageRow.next_attempt_at, MessageRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # rendered on PostgreSQL; SQLite holds BEGIN IMMEDIATE instead
        )
        statement = (
            update(MessageRow)
            .where(MessageRow.id.in_(candidates.scalar_subquery()))
            .values(
                status=SENDING,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=MessageRow.attempts + 1,
                updated_at=now,
                **takeover_values(now),  # a message taken from a dead owner is in doubt (outbox/doubt.py)
            )
            .returning(*CLAIM_COLUMNS)
            .execution_options(synchronize_session=False)
        )
        with self.db.write() as session:
            rows = session.execute(statement).all()
            if not rows:
                return []
            session.execute(
                EVENTS.insert(),
                [
                    {
                        "message_id": r.id,
                        "at": now,
                        "kind": "claimed",
                        "detail": f"attempt {r.attempts} by {owner}",
                        "request_id": None,
                    }
                    for r in rows
                ]
                + [
                    {"message_id": r.id, "at": now, "kind": IN_DOUBT, "detail": TAKEOVER_DETAIL, "request_id": None}
                    for r in rows
                    if taken_over(r.doubt_since, now)
                ],
            )
            bodies = _small_bodies(session, [r.id for r in rows if _inline(r)])
        claimed, corrupt = _records(rows, bodies)
        for message_id, problem in corrupt:
            self._set_aside(message_id, owner, problem)
        return sorted(claimed, key=lambda c: c.id)

    def _set_aside(self, message_id: int, owner: str, problem: CorruptRecord) -> None:
        """Fail one unreadable message with the reason, so that it neither blocks nor repeats."""
        log.error("message %s set aside: %s", message_id, problem)
        now = self.clock.now()
        reason = f"the stored message cannot be read: {problem}"

        def write(session: Session) -> None:
            session.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id, MessageRow.status == SENDING, MessageRow.lease_owner == owner)
                .values(
                    status=FAILED,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                    last_error_kind="CorruptMessage",
                    last_error_message=reason[:4000],
                    last_error_remedy=(
                        "The stored copy was damaged after it was accepted (disk or database trouble, or a manual "
                        "edit). Restore the database from a backup, or have the application send it again."
                    ),
                )
            )
            _event(session, message_id, now, FAILED, reason)

        self._write(write)

    def renew_leases(self, owner: str, ids: list[int], lease_seconds: float) -> int:
        if not ids:
            return 0
        until = self.clock.now() + timedelta(seconds=lease_seconds)

        # Through the committer like every other write of this process: two connections of one process
        # updating the same rows in different orders is how PostgreSQL deadlocks happen.
        def write(session: Session) -> int:
            result = session.execute(
                update(MessageRow)
                .where(MessageRow.id.in_(sorted(ids)), MessageRow.lease_owner == owner, MessageRow.status == SENDING)
                .values(lease_expires_at=until)
            )
            return int(getattr(result, "rowcount", 0) or 0)

        return self._write(write)

    def lease_owners(self, *, besides: str) -> set[str]:
        """Owners other than ``besides`` whose leases have not run out yet."""
        now = self.clock.now()
        with self.db.read() as session:
            owners = session.scalars(
                select(MessageRow.lease_owner)
                .where(
                    MessageRow.status == SENDING, MessageRow.lease_expires_at >= now, MessageRow.lease_owner != besides
                )
                .distinct()
            )
            return {o for o in owners if o}

    def expire_leases(self, owners: set[str], why: str) -> int:
        """End the leases of workers known to be dead now, instead of when they run out. The messages are
        then due exactly as after an expired lease (claimed again, their attempt counted)."""
        if not owners:
            return 0
        now = self.clock.now()
        gone = now - timedelta(seconds=1)

        def write(session: Session) -> int:
            ids = list(
                session.scalars(
                    select(MessageRow.id)
                    .where(MessageRow.status == SENDING, MessageRow.lease_owner.in_(sorted(owners)))
                    .order_by(MessageRow.id)
                    .with_for_update(skip_locked=True)
                )
            )
            if not ids:
                return 0
            session.execute(update(MessageRow).where(MessageRow.id.in_(ids)).values(lease_expires_at=gone))
            session.execute(
                EVENTS.insert(),
                [{"message_id": i, "at": now, "kind": "lease-ended", "detail": why, "request_id": None} for i in ids],
            )
            return len(ids)

        return self._write(write)

    def due_again(self, connector_id: int, error_kinds: list[str]) -> int:
        """Make the connector's deferred mail whose last error was one of ``error_kinds`` (an outage that is
        now over) due at once. Returns how many."""
        now = self.clock.now()

        def write(session: Session) -> int:
            result = session.execute(
                update(MessageRow)
                .where(
                    MessageRow.connector_id == connector_id,
                    MessageRow.status == DEFERRED,
                    MessageRow.next_attempt_at > now,
                    MessageRow.last_error_kind.in_(error_kinds),
                )
                .values(next_attempt_at=now)
            )
            return int(getattr(result, "rowcount", 0) or 0)

        return self._write(write)

    def expire(self) -> list[int]:
        """Fail mail older than the queue lifetime (Postfix's maximal_queue_lifetime): waiting mail, and mail
        stuck in ``sending`` whose lease ran out (no worker holds it, so no send can be under way)."""
        now = self.clock.now()
        with self.db.write() as session:
            # Row locks (skipping rows a worker is claiming right now) so that a message cannot be claimed and
            # sent by one process while another marks it failed.
            stale = and_(MessageRow.status == SENDING, MessageRow.lease_expires_at < now)
            ids = list(
                session.scalars(
                    select(MessageRow.id)
                    .where(or_(MessageRow.status.in_(PENDING), stale), MessageRow.expires_at <= now)
                    .with_for_update(skip_locked=True)
                )
            )
            for message_id in ids:
                row = session.get(MessageRow, message_id)
                assert row is not None
                reason = (
                    f"not sent within the queue lifetime ({self.max_queue_lifetime}); last error: "
                    f"{row.last_error_message or 'none'}"
                )
                row.status, row.updated_at = FAILED, now
                row.lease_owner, row.lease_expires_at = None, None
                row.last_error_kind = row.last_error_kind or "Expired"
                row.last_error_message = reason[:4000]
                row.last_error_remedy = row.last_error_remedy or (
                    "The message waited too long. Fix the cause shown in its events, then retry it."
                )
                _event(session, message_id, now, "expired", reason)
            return ids


def _inline(row: Any) -> bool:
    return isinstance(row.size, int) and row.size <= INLINE_BODY_BYTES


def _records(rows: Sequence[Any], bodies: dict[int, bytes]) -> tuple[list[Claimed], list[tuple[int, CorruptRecord]]]:
    claimed: list[Claimed] = []
    corrupt: list[tuple[int, CorruptRecord]] = []
    for row in rows:
        try:
            claimed.append(Claimed.from_claim(row._mapping, bodies.get(row.id)))
        except CorruptRecord as problem:
            corrupt.append((row.id, problem))
    return claimed, corrupt


def _small_bodies(session: Session, ids: list[int]) -> dict[int, bytes]:
    """The whole stored bytes of small messages, in one query (their chunks, in order)."""
    if not ids:
        return {}
    parts: dict[int, list[bytes]] = {}
    rows = session.execute(
        select(MessageChunkRow.message_id, MessageChunkRow.data)
        .where(MessageChunkRow.message_id.in_(ids))
        .order_by(MessageChunkRow.message_id, MessageChunkRow.seq)
    )
    for message_id, data in rows:
        parts.setdefault(message_id, []).append(bytes(data))
    return {message_id: b"".join(chunks) for message_id, chunks in parts.items()}


def _event(
    session: Session, message_id: int, at: datetime, kind: str, detail: str | None, request_id: str | None = None
) -> None:
    session.execute(
        EVENTS.insert(),
        {"message_id": message_id, "at": at, "kind": kind, "detail": detail, "request_id": request_id},
    )


__all__ = ["INLINE_BODY_BYTES", "Claims", "body_digest"]
