"""In-doubt sends, for the dispatcher (issue 15): an attempt whose outcome is unknown is looked up in the
sending mailbox's Sent Items before the message may be sent again (``mailbox/reconcile.py`` decides,
``outbox/doubt.py`` records). Lookups take an in-flight slot and a request of the budget like any Graph call;
database trouble during one counts nothing against the message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ..clock import Clock
from ..connectors import ConnectorConfig
from ..errors import SendInDoubtError, StoreError
from ..graph import GraphSender, OutgoingMessage
from ..mailbox.reconcile import Reconciler, Verdict
from ..metrics import Metrics
from ..outbox import Claimed, Outbox
from ..outbox.doubt import CONFIRMED, POSSIBLE_DUPLICATE, Doubts
from .budget import Budgets
from .gate import LocalGate
from .mailboxes import Hold, MailboxHolds, mailbox_of
from .probing import _Lane

log = logging.getLogger("m365relay.dispatch")
T = TypeVar("T")


class InDoubt:
    """The in-doubt half of ``Dispatcher`` (which supplies the attributes and helpers declared here)."""

    outbox: Outbox
    sender: GraphSender
    clock: Clock
    owner: str
    gate: LocalGate
    budgets: Budgets | None
    metrics: Metrics | None
    reconciler: Reconciler
    holds: MailboxHolds
    doubts: Doubts
    stats: Any

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        raise NotImplementedError

    async def _record(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        raise NotImplementedError

    async def _hold(self, connector: ConnectorConfig, mailbox: str, message: Claimed, wait: float, why: str) -> None:
        raise NotImplementedError

    async def _must_wait(self, lane: _Lane, probe: bool, hold: Hold | None = None) -> str | None:
        raise NotImplementedError

    async def _give_back(self, message: Claimed, reason: str) -> None:
        raise NotImplementedError

    async def _store_trouble(self, lane: _Lane, message: Claimed, exc: StoreError) -> None:
        raise NotImplementedError

    async def _failed(
        self, connector: ConnectorConfig, lane: _Lane, message: Claimed, exc: Exception, *, probe: bool
    ) -> bool:
        raise NotImplementedError

    def _count(self, status: str) -> None:
        raise NotImplementedError

    async def _reconcile(
        self, connector: ConnectorConfig, lane: _Lane, message: Claimed, *, probe: bool
    ) -> tuple[bool, bool | None]:
        """Before resending an in-doubt message, look for it in Sent Items, inside an in-flight slot and the
        request budget like any Graph call. Returns (handled, outcome): handled False means "send it now"."""
        mailbox = mailbox_of(connector, message.header_from)  # where it went: its Sent Items tell
        try:
            token = await self.sender.check_token(connector)
            why_not = self.reconciler.checkable(message, token)
            if why_not is not None:
                verdict = Verdict(POSSIBLE_DUPLICATE, why_not)
            else:
                if self.budgets is not None:
                    wait = await self._db(self.budgets.reserve, connector.id, 0, 1, mailbox)
                    if wait is not None:
                        why = f"request budget of mailbox {connector.mailbox_address(mailbox)} used up"
                        await self._hold(connector, mailbox, message, wait, why)
                        return True, None if probe else True
                async with self.gate.slot(connector.id, mailbox):
                    hold = self.holds.current(connector.id, mailbox, self.clock.now())
                    if (reason := await self._must_wait(lane, probe, hold)) is not None:
                        await self._give_back(message, reason)
                        return True, True
                    verdict = await self.reconciler.check(connector, message, self.clock.now(), mailbox)
        except asyncio.CancelledError:
            await asyncio.shield(self._db(self.outbox.release, message.id, self.owner, "worker shut down"))
            raise
        except StoreError as exc:  # the database, not the message: the doubt stays, nothing is counted
            await self._store_trouble(lane, message, exc)
            return True, None
        except Exception as exc:  # a failed lookup is a failed attempt; the doubt stays until one succeeds
            return True, await self._failed(connector, lane, message, exc, probe=probe)
        return await self._settle(connector, message, verdict)

    async def _settle(self, connector: ConnectorConfig, message: Claimed, verdict: Verdict) -> tuple[bool, bool | None]:
        if self.metrics is not None:
            self.metrics.reconciliations.labels(connector.name, verdict.action).inc()
        if verdict.action == CONFIRMED:
            await self._record(self.doubts.confirm, message.id, self.owner, verdict.detail, verdict.request_id)
            self.stats.sent += 1
            self._count("sent")
            return True, True
        if verdict.until is not None:
            await self._record(self.doubts.look_again, message.id, self.owner, verdict.until, verdict.detail)
            self.stats.deferred += 1
            return True, True
        if verdict.action == POSSIBLE_DUPLICATE:
            log.warning("message %s: sending again without a check (%s)", message.id, verdict.detail)
        await self._record(self.doubts.resolve, message.id, self.owner, verdict.action, verdict.detail)
        return False, None

    async def _record_doubt(self, message: Claimed, error: SendInDoubtError | None) -> None:
        first = self.reconciler.first_lookup(self.clock.now())
        await self._record(self.doubts.record, message.id, self.owner, error, first)
        self.stats.deferred += 1
        if self.metrics is not None:
            self.metrics.in_doubt.inc()

    async def _note_draft(self, message: Claimed, draft_id: str, internet_message_id: str | None) -> None:
        await self._record(self.doubts.note_draft, message.id, self.owner, draft_id, internet_message_id)

    async def _with_message_id(
        self, connector: ConnectorConfig, message: Claimed, outgoing: OutgoingMessage
    ) -> OutgoingMessage:
        """Every send carries a Message-ID the outbox knows (it is what Sent Items is searched by). Acceptance
        adds one; a message stored without it gets one derived from its row, so a retry adds the same."""
        present = (outgoing.header_text("Message-ID") or "").strip()
        if message.message_id and present:
            return outgoing
        if not present:
            domain = connector.user_name.rpartition("@")[2] or "m365relay.invalid"  # any of its mailboxes' domains
            stamp = int(message.created_at.timestamp() * 1000)
            present = message.message_id or f"<m365relay.{message.id}.{stamp}@{domain}>"
            outgoing.set_value("Message-ID", present)
        if not message.message_id:
            await self._record(self.doubts.store_message_id, message.id, present)
        return outgoing
