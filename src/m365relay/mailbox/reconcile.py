"""Deciding what to do with an in-doubt message: confirm it from Sent Items, look again later, or resend.

With a read permission (Mail.ReadBasic.All, Mail.Read or Mail.ReadWrite in the token's roles) the message is
looked up by its Message-ID, which a MIME send keeps as `internetMessageId` (PROTOCOL.md §12):

* found → it was sent ("confirmed in Sent Items", with the copy's sentDateTime);
* not found, settle time not yet over → look again later (after 3 s, then at doubling intervals, and once
  more exactly when the settle time ends — Exchange files the copy asynchronously, so an early miss proves
  nothing);
* not found when the settle time is over → it was not sent: send it again. That last lookup is made right
  before the resend, in the same attempt.

A large message (draft + upload + `send`) is also checked by its draft: still in Drafts means not sent yet.
Without the permission, or for a send Sent Items cannot have (JSON with saveToSentItems=false), there is
nothing to check: the message is sent again as before, and the history says "possible duplicate".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..auth.tokens import AccessToken
from ..connectors.model import ConnectorConfig
from ..graph.sender import can_read
from ..outbox import Claimed
from ..outbox.doubt import CONFIRMED, LOOKED_UP, POSSIBLE_DUPLICATE, RESENT
from .sent_items import CannotCheck, SentItems

FIRST_LOOKUP_SECONDS = 3.0  # the copy usually appears within seconds of the 202 [obs]
DEFAULT_SETTLE_SECONDS = 120.0
NO_PERMISSION = "possible duplicate: add Mail.ReadBasic.All to avoid"


@dataclass(frozen=True)
class Verdict:
    action: str  # CONFIRMED | LOOKED_UP (look again at `until`) | RESENT | POSSIBLE_DUPLICATE (send now)
    detail: str
    until: datetime | None = None
    request_id: str | None = None

    @property
    def resend(self) -> bool:
        return self.action in (RESENT, POSSIBLE_DUPLICATE)

    @property
    def requests(self) -> int:
        return 0 if self.action == POSSIBLE_DUPLICATE else 1


class Reconciler:
    def __init__(self, sent_items: SentItems, *, settle: float = DEFAULT_SETTLE_SECONDS, prefer_mime: bool = True):
        self.sent_items = sent_items
        self.settle = timedelta(seconds=settle)
        self.prefer_mime = prefer_mime

    def first_lookup(self, now: datetime) -> datetime:
        return now + min(timedelta(seconds=FIRST_LOOKUP_SECONDS), self.settle)

    def checkable(self, message: Claimed, token: AccessToken) -> str | None:
        """Why this message cannot be checked in Sent Items, or None when it can (then a lookup follows)."""
        readable = can_read(token.roles)
        if readable is False:
            return NO_PERMISSION
        if not message.save_to_sent_items and not message.draft_id and not (self.prefer_mime and readable):
            return (
                "possible duplicate: sent as JSON with saveToSentItems=false, which leaves no copy in Sent Items "
                "to check"
            )
        if not (message.draft_message_id or message.message_id):
            return "possible duplicate: the message has no Message-ID to look up"
        return None

    async def check(self, connector: ConnectorConfig, message: Claimed, now: datetime, mailbox: str = "") -> Verdict:
        """Look the in-doubt message up (one or two Graph reads) in the mailbox it went through (``""``: the
        connector's User Name; else a send-as mailbox, PROTOCOL.md §15). Raises transient errors for the caller."""
        assert message.doubt_since is not None
        settle_at = message.doubt_since + self.settle
        try:
            who = connector.mailbox_address(mailbox)
            if message.draft_id and await self.sent_items.draft_exists(connector, message.draft_id, mailbox=who):
                return self._not_found(now, settle_at, "its draft is still in Drafts")
            wanted = message.draft_message_id or message.message_id or ""
            copy = await self.sent_items.find(connector, wanted, mailbox=who)
        except CannotCheck as exc:
            return Verdict(POSSIBLE_DUPLICATE, f"possible duplicate: Sent Items could not be checked ({exc})")
        if copy is not None:
            when = f" (sentDateTime {copy.sent_at})" if copy.sent_at else ""
            return Verdict(CONFIRMED, f"confirmed in Sent Items{when}: not sent again", request_id=copy.request_id)
        return self._not_found(now, settle_at, f"{wanted} is not in Sent Items")

    def _not_found(self, now: datetime, settle_at: datetime, why: str) -> Verdict:
        if now >= settle_at:
            seconds = self.settle.total_seconds()
            return Verdict(RESENT, f"{why} {seconds:.0f} s after the in-doubt attempt: it was not sent; sending again")
        waited = max(timedelta(seconds=FIRST_LOOKUP_SECONDS), now - (settle_at - self.settle))
        until = min(settle_at, now + waited)
        return Verdict(LOOKED_UP, f"{why} yet; looking again at {until.isoformat(timespec='seconds')}", until=until)
