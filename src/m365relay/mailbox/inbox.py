"""Bounce intake: read each sending mailbox's Inbox and turn delivery reports into recipient states.

PROTOCOL.md §12: ``GET /users/{mailbox}/mailFolders/inbox/messages/delta`` pages through new mail
(``@odata.nextLink``) and ends with an ``@odata.deltaLink`` that is stored per connector and used next time;
``GET /users/{mailbox}/messages/{id}/$value`` gives a message's MIME, which ``reports.classify`` reads. Both
need Mail.Read (Mail.ReadWrite includes it): without either role in the token the mailbox is not read.

Reads are Graph requests against the same mailbox as the sends, so each one takes an in-flight slot of the
connector's gate and a request of its budget (§7). One process at a time reads a mailbox: a lease on the
connector's ``mailbox_cursors`` row (taken with SELECT … FOR UPDATE), so several ``serve``/``worker``
processes on PostgreSQL never read the same mailbox twice; and recording a state is idempotent, so a
report seen again after a crash changes nothing. Mail in the mailbox is never moved or deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import String, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..connectors import ConnectorConfig, ConnectorStore
from ..db.engine import Database
from ..db.models import MailboxCursorRow, MessageRow
from ..dispatch.budget import Budgets
from ..dispatch.gate import LocalGate
from ..errors import DeliveryError, StoreError
from ..graph import GraphSender
from ..graph.calls import Call
from ..metrics import Metrics
from ..outbox.recipients import BOUNCED, DELAYED, set_state
from ..suppression import Suppressions
from . import reports
from .reports import Report

log = logging.getLogger("m365relay.inbox")

READ_ROLES = frozenset({"Mail.Read", "Mail.ReadWrite"})
PAGE_SIZE = 50  # Prefer: odata.maxpagesize (PROTOCOL.md §12)
SELECT = "id,internetMessageId,subject,from,receivedDateTime"


class InboxReader:
    def __init__(
        self,
        *,
        db: Database,
        connectors: ConnectorStore,
        sender: GraphSender,
        suppressions: Suppressions,
        gate: LocalGate,
        budgets: Budgets | None,
        owner: str,
        metrics: Metrics | None = None,
        poll_seconds: float = 15.0,
        lease_seconds: float = 300.0,
    ) -> None:
        self.db = db
        self.connectors = connectors
        self.sender = sender
        self.suppressions = suppressions
        self.gate = gate
        self.budgets = budgets
        self.owner = owner
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self._without_role: set[int] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Read every active connector's mailbox, then wait ``poll_seconds``; until ``stop``."""
        while not stop.is_set():
            try:
                await self.read_all()
            except StoreError as exc:
                log.warning("inbox: %s; retrying", exc.message)
            except Exception:  # a surprise must not end bounce intake for the life of the process
                log.exception("inbox: unexpected error; carrying on")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def read_all(self) -> int:
        connectors = await asyncio.to_thread(self.connectors.all)
        total = 0
        for connector in connectors:
            if not connector.paused:
                total += await self.read(connector)
        return total

    async def read(self, connector: ConnectorConfig) -> int:
        """One delta round over the connector's Inbox; returns how many recipient states changed."""
        try:
            token = await self.sender.check_token(connector)
        except DeliveryError as exc:
            log.debug("inbox %s: no token (%s)", connector.name, exc)
            return 0
        if token.roles is not None and not READ_ROLES & set(token.roles):
            if connector.id not in self._without_role:
                self._without_role.add(connector.id)
                log.info("inbox %s: the token has no Mail.Read; bounces are not read", connector.name)
            return 0
        leased, delta_link = await asyncio.to_thread(self._take_lease, connector.id)
        if not leased:
            return 0
        changed, link, error = 0, delta_link, None
        try:
            changed, link = await self._round(connector, Call(connector, token), delta_link)
        except DeliveryError as exc:
            error = exc.message
            log.warning("inbox %s: reading stopped: %s", connector.name, exc.message)
        finally:
            await asyncio.to_thread(self._release, connector.id, link, error, changed)
        return changed

    async def _round(self, connector: ConnectorConfig, call: Call, delta_link: str | None) -> tuple[int, str | None]:
        base = f"{connector.cloud.graph_url}/v1.0/users/{quote(connector.user_name)}"
        url: str | None = delta_link or f"{base}/mailFolders/inbox/messages/delta?$select={SELECT}"
        changed = 0
        # A report cannot be about mail the outbox never held: the first (full) sync of a big Inbox skips
        # everything older than the connector's oldest message without downloading it.
        since = await asyncio.to_thread(self._oldest_message, connector.id)
        while url is not None:
            page = json.loads(await self._get(call, url, {"Prefer": f"odata.maxpagesize={PAGE_SIZE}"}))
            for item in page.get("value") or []:
                if not isinstance(item, dict) or "@removed" in item or not item.get("id"):
                    continue
                if since is None or _received(item) < since:
                    continue
                raw = await self._get(call, f"{base}/messages/{quote(str(item['id']), safe='')}/$value", {})
                report = reports.classify(raw)
                if report.counts:
                    changed += await asyncio.to_thread(self.apply, connector, report)
            url = page.get("@odata.nextLink")
            if url is None:
                return changed, page.get("@odata.deltaLink") or delta_link
        return changed, delta_link

    async def _get(self, call: Call, url: str, headers: dict[str, str]) -> bytes:
        if self.budgets is not None:
            wait = await asyncio.to_thread(self.budgets.reserve, call.connector.id, 0, 1)
            if wait is not None:  # sends and reads share the mailbox's budget: stop; the cursor stays
                raise DeliveryError(f"the mailbox's request budget is spent for {wait:.0f} s", retry_after=wait)
        async with self.gate.slot(call.connector.id):
            response = await self.sender.request(call, "GET", "inbox", headers=headers, absolute_url=url)
        return response.content

    # -- database --------------------------------------------------------------------------------

    def _take_lease(self, connector_id: int) -> tuple[bool, str | None]:
        now = datetime.now(UTC)
        try:
            with self.db.write() as session:
                row = session.get(MailboxCursorRow, connector_id, with_for_update=True)
                if row is None:
                    row = MailboxCursorRow(connector_id=connector_id, reports=0)
                    session.add(row)
                elif row.lease_owner not in (None, self.owner) and (row.lease_expires_at or now) > now:
                    return False, None  # another process is reading this mailbox
                row.lease_owner, row.lease_expires_at = self.owner, now + self.lease
                return True, row.delta_link
        except (IntegrityError, StoreError):
            return False, None  # another process created the row at the same moment: it reads this round

    def _oldest_message(self, connector_id: int) -> datetime | None:
        with self.db.read() as session:
            oldest = session.scalar(
                select(func.min(MessageRow.created_at)).where(MessageRow.connector_id == connector_id)
            )
        if oldest is None:
            return None
        # Aggregates bypass the column type (naive UTC); allow for clock skew between Exchange and us.
        return (oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)) - timedelta(minutes=10)

    def _release(self, connector_id: int, delta_link: str | None, error: str | None, changed: int) -> None:
        with self.db.write() as session:
            row = session.get(MailboxCursorRow, connector_id, with_for_update=True)
            if row is None or row.lease_owner != self.owner:
                return  # the lease was taken over (we were too slow): the other reader's cursor wins
            row.delta_link, row.last_error = delta_link, error
            row.lease_owner, row.lease_expires_at = None, None
            row.last_read_at = datetime.now(UTC)
            row.reports += changed

    def apply(self, connector: ConnectorConfig, report: Report) -> int:
        """Record what one report says about mail this connector sent; returns the number of changed states."""
        with self.db.write() as session:
            message = _find_message(session, connector.id, report)
            if message is None:
                return 0
            sent_to = {a.lower() for a in message.recipients}
            at = report.reported_at or datetime.now(UTC)
            changed = 0
            for recipient in report.recipients:
                address = recipient.address if recipient.address in sent_to else recipient.original
                if address is None or address not in sent_to:
                    continue
                state = DELAYED if recipient.action == "delayed" else BOUNCED
                fresh = set_state(
                    session, message.id, address, state, status=recipient.status, diagnostic=recipient.diagnostic, at=at
                )
                if not fresh:
                    continue
                changed += 1
                self._count(connector, "bounces", state)
                if state == BOUNCED and self.suppressions.from_bounce(
                    session,
                    connector_id=connector.id,
                    address=address,
                    status=recipient.status,
                    diagnostic=recipient.diagnostic,
                    bounced_at=at,
                    message_id=message.id,
                ):
                    self._count(connector, "suppressions", "added")
            return changed

    def _count(self, connector: ConnectorConfig, metric: str, label: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, metric).labels(connector.name, label).inc()


def _received(item: dict[str, Any]) -> datetime:
    """``receivedDateTime`` (ISO 8601, Z); an item without a readable one is read anyway."""
    try:
        moment = datetime.fromisoformat(str(item.get("receivedDateTime", "")).replace("Z", "+00:00"))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _find_message(session: Session, connector_id: int, report: Report) -> Any:
    """The outbox message a report is about: by its Message-ID, else (for reports that name none) the newest
    sent message to one of its recipients. A free-text report counts only when one of those matches."""
    if report.original_message_id:
        wanted = report.original_message_id.strip()
        bare = wanted.strip("<>")
        found = session.scalar(
            select(MessageRow)
            .where(MessageRow.connector_id == connector_id, MessageRow.message_id.in_([wanted, bare, f"<{bare}>"]))
            .order_by(MessageRow.id.desc())
            .limit(1)
        )
        if found is not None or report.kind != reports.FREE_TEXT:
            return found
    for recipient in report.recipients:
        pattern = '%"' + recipient.address.replace("%", "").replace("_", "\\_") + '"%'
        found = session.scalar(
            select(MessageRow)
            .where(
                MessageRow.connector_id == connector_id,
                MessageRow.status == "sent",
                cast(MessageRow.recipients, String).ilike(pattern, escape="\\"),
            )
            .order_by(MessageRow.id.desc())
            .limit(1)
        )
        if found is not None:
            return found
    return None
