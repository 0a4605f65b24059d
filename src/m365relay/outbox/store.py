"""The durable outbox. Once ``enqueue`` returns, the message is committed (SQLite: WAL + synchronous=FULL;
PostgreSQL: a committed transaction) and the relay owns it: it ends ``sent``, ``failed`` (with the reason
and remedy) or ``cancelled`` — never lost.

Work is claimed with a lease in one statement (``claim``); a worker that dies leaves leases that expire,
and its messages are claimed again. Every transition writes an event, so ``queue show`` tells the story.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, BinaryIO, TypeVar
from typing import cast as type_cast

from sqlalchemy import String, Table, and_, cast, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..clock import Clock, SystemClock
from ..db.engine import Database
from ..db.groupcommit import GroupCommitter
from ..db.models import MessageChunkRow, MessageEventRow, MessageRow
from ..errors import ConflictError, DeliveryError, NotFoundError, ValidationError
from ..graph.mime import OutgoingMessage
from .doubt import IN_DOUBT, TAKEOVER_DETAIL, taken_over, takeover_values
from .rawsql import RawStatements
from .records import (
    CANCELLED,
    DEFERRED,
    FAILED,
    FINAL,
    PENDING,
    QUEUED,
    SENDING,
    SENT,
    Claimed,
    EnqueueResult,
    MessageRecord,
    QueueStats,
)

T = TypeVar("T")
MESSAGES = type_cast(Table, MessageRow.__table__)
CHUNKS = type_cast(Table, MessageChunkRow.__table__)
EVENTS = type_cast(Table, MessageEventRow.__table__)
CHUNK_BYTES = 1024 * 1024
MAX_RECIPIENTS = 500  # Exchange Online's per-message limit (PROTOCOL.md §7)
SPOOL_IN_MEMORY = 4 * 1024 * 1024
CHUNKS_PER_READ = 4
INLINE_BODY_BYTES = (
    256 * 1024
)  # claimed messages up to this size come with their bytes  # bodies larger than this are spooled to a temporary file


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
    MessageRow.doubt_since,
    MessageRow.draft_id,
    MessageRow.draft_message_id,
)


class Outbox:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock | None = None,
        max_queue_lifetime: float = 5 * 86_400,
        committer: GroupCommitter | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.max_queue_lifetime = timedelta(seconds=max_queue_lifetime)
        # With a committer, concurrent writes share transactions (one fsync per batch, db/groupcommit.py).
        self.committer = committer
        self.listeners: list[Callable[[int], None]] = []  # called after each commit of a new message
        self._raw = RawStatements(db.dialect, MESSAGES, CHUNKS, EVENTS)
        self._dbapi_integrity_error: type[Exception] = db.engine.dialect.loaded_dbapi.IntegrityError

    def _write(self, fn: Callable[[Session], T], *, isolate: bool = False) -> T:
        if self.committer is not None:
            return self.committer.run(fn, isolate=isolate)
        with self.db.write() as session:
            return fn(session)

    # -- ingress -----------------------------------------------------------------------------------

    def enqueue(
        self,
        connector_id: int,
        message: OutgoingMessage,
        *,
        envelope: list[str] | None = None,
        envelope_from: str | None = None,
        source: str = "library",
        source_detail: str | None = None,
        idempotency_key: str | None = None,
        content_hash: str | None = None,
        save_to_sent_items: bool = True,
    ) -> EnqueueResult:
        """Commit ``message`` to the outbox. ``envelope`` (SMTP RCPT TO) decides who receives it; without
        one, the To/Cc/Bcc headers do. Returns only after the commit."""
        recipients = _dedupe(envelope if envelope is not None else message.header_recipients())
        if not recipients:
            raise ValidationError("recipients", "the message has no recipients (To, Cc, Bcc or envelope)", key="to")
        if len(recipients) > MAX_RECIPIENTS:
            raise ValidationError(
                "recipients", f"{len(recipients)} recipients; Exchange Online accepts at most 500", key="to"
            )
        if idempotency_key is not None and content_hash is None:
            content_hash = _hash(message)
        domain = (envelope_from or message_sender(message) or "m365relay.invalid").rpartition("@")[2] or "localhost"
        message_id = message.ensure_message_id(domain)
        now = self.clock.now()
        fields = {
            "envelope_from": envelope_from,
            "source": source,
            "source_detail": source_detail,
            "idempotency_key": idempotency_key,
            "content_hash": content_hash,
            "save_to_sent_items": save_to_sent_items,
            "message_id": message_id[:998],
        }

        def write(session: Session) -> EnqueueResult:
            existing = _by_key(session, connector_id, idempotency_key) if idempotency_key is not None else None
            if existing is not None:
                return _same_or_conflict(existing, content_hash)
            return EnqueueResult(self._insert(session, connector_id, message, recipients, now, fields), True)

        try:
            result = self._write(write, isolate=idempotency_key is not None)
        except (IntegrityError, self._dbapi_integrity_error):  # the raw inserts raise the driver's own class
            # Two writers raced on one idempotency key and the other committed first.
            if idempotency_key is None:
                raise
            with self.db.read() as session:
                existing = _by_key(session, connector_id, idempotency_key)
                if existing is None:
                    raise
                return _same_or_conflict(existing, content_hash)
        if result.created:
            for listener in self.listeners:
                listener(result.id)
        return result

    def _insert(
        self,
        session: Session,
        connector_id: int,
        message: OutgoingMessage,
        recipients: list[str],
        now: datetime,
        fields: dict[str, Any],
    ) -> int:
        header = message.header_bytes()
        size = len(header) + message.body_size
        raw = self._raw
        cursor = raw.cursor(session)
        new_id = raw.insert_message(
            cursor,
            {
                **fields,
                "connector_id": connector_id,
                "status": QUEUED,
                "recipients": recipients,
                "recipient_count": len(recipients),
                "subject": _header_text(message.header_text("Subject"))[:998],
                "header_from": _header_text(message.header_text("From"))[:998],
                "size": size,
                "attempts": 0,
                "next_attempt_at": now,
                "expires_at": now + self.max_queue_lifetime,
                "created_at": now,
                "updated_at": now,
            },
        )
        # Chunk 0 is the header block (views read headers without the body); the body follows in 1 MiB
        # chunks read from its stream, so a large message is never copied whole.
        raw.insert_chunk(cursor, new_id, 0, header)
        message.body.seek(message.body_offset)
        seq = 1
        while data := message.body.read(CHUNK_BYTES):
            raw.insert_chunk(cursor, new_id, seq, data)
            seq += 1
        detail = f"{len(recipients)} recipient(s), {size} bytes, via {fields['source']}"
        raw.insert_event(cursor, {"message_id": new_id, "at": now, "kind": "queued", "detail": detail})
        return new_id

    # -- claiming ----------------------------------------------------------------------------------

    def claim(self, owner: str, connector_id: int, limit: int, lease_seconds: float) -> list[Claimed]:
        """Lease up to ``limit`` due messages of one connector to ``owner``, oldest due first. Messages whose
        lease expired (their worker died) are due again. One statement: on PostgreSQL the inner SELECT takes
        ``FOR UPDATE SKIP LOCKED``, so concurrent workers never claim the same message."""
        if limit <= 0:
            return []
        now = self.clock.now()
        due = or_(
            and_(MessageRow.status.in_(PENDING), MessageRow.next_attempt_at <= now),
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
            bodies = _small_bodies(session, [r.id for r in rows if r.size <= INLINE_BODY_BYTES])
        claimed = [
            Claimed(**{**row._mapping, "recipients": tuple(row.recipients), "body": bodies.get(row.id)}) for row in rows
        ]
        return sorted(claimed, key=lambda c: c.id)

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

    def open_body(self, message_id: int) -> BinaryIO:
        """The stored RFC 5322 bytes as a seekable file: in memory when small, spooled to disk when large."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - returned to the caller
        # A few chunks per query: one round trip for a small message, flat memory for a large one (a server-
        # side cursor would cost three round trips even for the one-chunk messages that are the norm).
        next_seq = 0
        with self.db.read() as session:
            while True:
                rows = session.execute(
                    select(MessageChunkRow.seq, MessageChunkRow.data)
                    .where(MessageChunkRow.message_id == message_id, MessageChunkRow.seq >= next_seq)
                    .order_by(MessageChunkRow.seq)
                    .limit(CHUNKS_PER_READ)
                ).all()
                for seq, data in rows:
                    spool.write(data)
                    next_seq = seq + 1
                if len(rows) < CHUNKS_PER_READ:
                    break
        spool.seek(0)
        return type_cast(BinaryIO, spool)

    # -- outcomes ----------------------------------------------------------------------------------

    def mark_sent(self, message_id: int, owner: str, request_id: str | None, notes: tuple[str, ...] = ()) -> None:
        """Record the send. It is recorded even if this worker's lease was lost meanwhile: it did send."""
        now = self.clock.now()

        def write(session: Session) -> None:
            session.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id, MessageRow.status != SENT)
                .values(
                    status=SENT,
                    graph_request_id=request_id,
                    sent_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            detail = "; ".join(notes) or "accepted by Microsoft Graph (202)"
            _event(session, message_id, now, "sent", detail, request_id)

        self._write(write)

    def defer(
        self,
        message_id: int,
        owner: str,
        error: DeliveryError | None,
        until: datetime,
        reason: str,
        *,
        uncount: bool = False,
    ) -> bool:
        """Wait until ``until``. ``uncount``: the attempt never reached Graph (a budget held it back)."""
        return self._finish_attempt(message_id, owner, DEFERRED, error, reason, next_attempt_at=until, uncount=uncount)

    def fail(self, message_id: int, owner: str, error: DeliveryError | None, reason: str) -> bool:
        return self._finish_attempt(message_id, owner, FAILED, error, reason)

    def release(self, message_id: int, owner: str, reason: str, *, uncount: bool = True) -> bool:
        """Give a claimed message back without holding it against the message (shutdown, paused connector,
        budget): it is due again at once and the attempt is not counted."""
        now = self.clock.now()
        values: dict[str, Any] = {
            "status": QUEUED,
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": now,
            "updated_at": now,
        }
        if uncount:
            values["attempts"] = MessageRow.attempts - 1

        def write(session: Session) -> bool:
            done = _apply(session, message_id, owner, values)
            if done:
                _event(session, message_id, now, "released", reason)
            return done

        return self._write(write)

    def _finish_attempt(
        self,
        message_id: int,
        owner: str,
        status: str,
        error: DeliveryError | None,
        reason: str,
        next_attempt_at: datetime | None = None,
        uncount: bool = False,
    ) -> bool:
        now = self.clock.now()
        values: dict[str, Any] = {"status": status, "lease_owner": None, "lease_expires_at": None, "updated_at": now}
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if uncount:
            values["attempts"] = MessageRow.attempts - 1
        if error is not None:
            d = error.diagnostics
            values.update(
                last_error_kind=error.kind,
                last_error_code=d.code,
                last_error_status=d.status,
                last_error_request_id=d.request_id,
                last_error_message=error.message[:4000],
                last_error_remedy=error.remedy,
            )

        def write(session: Session) -> bool:
            done = _apply(session, message_id, owner, values)
            if done:
                _event(session, message_id, now, status, reason, error.request_id if error else None)
            return done

        return self._write(write)

    # -- operator actions --------------------------------------------------------------------------

    def cancel(self, message_id: int, *, actor: str = "cli") -> MessageRecord:
        now = self.clock.now()
        with self.db.write() as session:
            row = self._row(session, message_id, lock=True)
            if row.status not in PENDING:
                raise ConflictError(
                    f"message {message_id} is {row.status}; only queued or deferred mail can be cancelled"
                )
            row.status, row.updated_at = CANCELLED, now
            _event(session, message_id, now, "cancelled", f"by {actor}")
            session.flush()
            return MessageRecord.from_row(row)

    def retry(self, message_id: int, *, actor: str = "cli") -> MessageRecord:
        """Queue a failed, cancelled or deferred message for an attempt now (and a fresh queue lifetime)."""
        now = self.clock.now()
        with self.db.write() as session:
            row = self._row(session, message_id, lock=True)
            if row.status in (SENT, SENDING):
                raise ConflictError(f"message {message_id} is {row.status}; it cannot be retried")
            row.status, row.next_attempt_at, row.updated_at = QUEUED, now, now
            row.expires_at = max(row.expires_at, now + self.max_queue_lifetime)
            row.attempts = 0  # a fresh start: backoff begins again from the first step
            _event(session, message_id, now, "retry", f"requeued by {actor}")
            session.flush()
            return MessageRecord.from_row(row)

    def expire(self) -> list[int]:
        """Fail pending messages older than the queue lifetime (Postfix's maximal_queue_lifetime)."""
        now = self.clock.now()
        with self.db.write() as session:
            # Row locks (skipping rows a worker is claiming right now) so that a message cannot be claimed and
            # sent by one process while another marks it failed.
            ids = list(
                session.scalars(
                    select(MessageRow.id)
                    .where(MessageRow.status.in_(PENDING), MessageRow.expires_at <= now)
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
                row.last_error_kind = row.last_error_kind or "Expired"
                row.last_error_message = reason[:4000]
                row.last_error_remedy = row.last_error_remedy or (
                    "The message waited too long. Fix the cause shown in its events, then retry it."
                )
                _event(session, message_id, now, "expired", reason)
            return ids

    def purge(
        self, statuses: tuple[str, ...] = FINAL, older_than: timedelta = timedelta(0), *, limit: int | None = None
    ) -> int:
        """Delete finished messages (bodies and events go with them) last changed before ``older_than`` ago;
        at most ``limit`` in this transaction, so a large purge does not hold the writers up. Returns how many."""
        if any(s not in FINAL for s in statuses):
            raise ValidationError("--status", "only sent, failed or cancelled mail can be purged")
        cutoff = self.clock.now() - older_than
        which = select(MessageRow.id).where(MessageRow.status.in_(statuses), MessageRow.updated_at <= cutoff)
        with self.db.write() as session:
            if limit is not None:
                ids = list(session.scalars(which.order_by(MessageRow.id).limit(limit)))
                if not ids:
                    return 0
                result = session.execute(delete(MessageRow).where(MessageRow.id.in_(ids)))
            else:
                result = session.execute(
                    delete(MessageRow).where(MessageRow.status.in_(statuses), MessageRow.updated_at <= cutoff)
                )
            return int(getattr(result, "rowcount", 0) or 0)

    # -- reading -----------------------------------------------------------------------------------

    def get(self, message_id: int, *, events: bool = True) -> MessageRecord:
        with self.db.read() as session:
            row = self._row(session, message_id)
            rows = (
                list(
                    session.scalars(
                        select(MessageEventRow)
                        .where(MessageEventRow.message_id == message_id)
                        .order_by(MessageEventRow.id)
                    )
                )
                if events
                else []
            )
            return MessageRecord.from_row(row, rows)

    def headers(self, message_id: int) -> bytes:
        """The stored header block (chunk 0), for views that show headers without loading the body."""
        with self.db.read() as session:
            data = session.scalar(
                select(MessageChunkRow.data).where(MessageChunkRow.message_id == message_id, MessageChunkRow.seq == 0)
            )
            if data is None:
                raise NotFoundError(f"no message {message_id}")
            return bytes(data)

    def list(
        self,
        *,
        status: str | None = None,
        connector_id: int | None = None,
        recipient: str | None = None,
        older_than: timedelta | None = None,
        newer_than: timedelta | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[MessageRecord]:
        """Newest first; page with ``before_id`` (the last id of the previous page)."""
        now = self.clock.now()
        query = select(MessageRow).order_by(MessageRow.id.desc()).limit(limit)
        conditions = []
        if status:
            conditions.append(MessageRow.status == status)
        if connector_id is not None:
            conditions.append(MessageRow.connector_id == connector_id)
        if recipient:
            conditions.append(cast(MessageRow.recipients, String).ilike(f"%{_like_escape(recipient)}%", escape="\\"))
        if older_than is not None:
            conditions.append(MessageRow.created_at <= now - older_than)
        if newer_than is not None:
            conditions.append(MessageRow.created_at >= now - newer_than)
        if before_id is not None:
            conditions.append(MessageRow.id < before_id)
        if conditions:
            query = query.where(and_(*conditions))
        with self.db.read() as session:
            return [MessageRecord.from_row(row) for row in session.scalars(query)]

    def stats(self) -> QueueStats:
        with self.db.read() as session:
            counts = session.execute(
                select(MessageRow.connector_id, MessageRow.status, func.count()).group_by(
                    MessageRow.connector_id, MessageRow.status
                )
            ).all()
            oldest = session.scalar(select(func.min(MessageRow.created_at)).where(MessageRow.status.in_(PENDING)))
        by_status: dict[str, int] = {}
        by_connector: dict[int, dict[str, int]] = {}
        for connector_id, status, count in counts:
            by_status[status] = by_status.get(status, 0) + count
            by_connector.setdefault(connector_id, {})[status] = count
        if oldest is not None and oldest.tzinfo is None:  # aggregate results bypass the column type
            from datetime import UTC

            oldest = oldest.replace(tzinfo=UTC)
        return QueueStats(by_status, oldest, by_connector)

    def pending_count(self) -> int:
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).where(MessageRow.status.in_((*PENDING, SENDING)))) or 0)

    def _row(self, session: Session, message_id: int, *, lock: bool = False) -> MessageRow:
        """The row; with ``lock``, held (SELECT … FOR UPDATE on PostgreSQL) until the transaction ends, so a
        status check and the write that depends on it cannot be split by a concurrent claim."""
        row = session.get(MessageRow, message_id, with_for_update=lock)
        if row is None:
            raise NotFoundError(f"no message {message_id}")
        return row


# -- helpers --------------------------------------------------------------------------------------


def message_sender(message: OutgoingMessage) -> str | None:
    return message.first_address("From")


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


def _apply(session: Session, message_id: int, owner: str, values: dict[str, Any]) -> bool:
    """Update a message this worker holds; a worker whose lease was taken over changes nothing (fencing)."""
    condition = (MessageRow.id == message_id, MessageRow.status == SENDING, MessageRow.lease_owner == owner)
    result = session.execute(update(MessageRow).where(*condition).values(**values))
    return bool(getattr(result, "rowcount", 0))


def _event(
    session: Session, message_id: int, at: datetime, kind: str, detail: str | None, request_id: str | None = None
) -> None:
    session.execute(
        EVENTS.insert(),
        {"message_id": message_id, "at": at, "kind": kind, "detail": detail, "request_id": request_id},
    )


def _by_key(session: Session, connector_id: int, key: str) -> MessageRow | None:
    return session.scalar(
        select(MessageRow).where(MessageRow.connector_id == connector_id, MessageRow.idempotency_key == key)
    )


def _same_or_conflict(existing: MessageRow, content_hash: str | None) -> EnqueueResult:
    if existing.content_hash == content_hash:
        return EnqueueResult(existing.id, False)
    raise ConflictError(
        f"idempotency key {existing.idempotency_key!r} was already used for a different message ({existing.id})",
        remedy="Use a new key for a new message; resend the same content to get the earlier message's id.",
    )


def _hash(message: OutgoingMessage) -> str:
    digest = hashlib.sha256()
    for chunk in message.iter_bytes(CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def _dedupe(addresses: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.strip().lower(), address.strip())
    return [a for a in seen.values() if a]


def _header_text(value: object) -> str:
    return " ".join(str(value or "").split())


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
