"""In-doubt sends: attempts whose outcome is unknown, kept apart from clean failures (issue 15).

A message is *in doubt* while ``messages.doubt_since`` is set: its last attempt may have reached Exchange
(the answer was lost, the read timed out, or its worker died holding it), so it must be looked up in the
mailbox's Sent Items before it may be sent again (``mailbox/reconcile.py``). A clean failure (Graph
answered 4xx/5xx, or the connection never carried the request) leaves ``doubt_since`` alone and goes
through the retry policy as before.

How a message gets into doubt:

* the send raised ``SendInDoubtError`` → ``Doubts.record`` (deferred to its first lookup);
* its worker stopped while the request was on the wire (shutdown cancelled it) → ``Doubts.record``;
* its worker died holding it → whoever takes the message back (``Outbox.claim`` after the lease expired, or a
  release of a dead owner's leases) includes ``takeover_values(now)`` in the same UPDATE: a SENDING message
  taken from another owner is in doubt from that moment.

It leaves doubt by ``confirm`` (found in Sent Items: sent) or ``resolve`` (not found after the settle time, or
no way to check: it is sent again, and the history says which).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, update
from sqlalchemy.orm import Session

from ..db.models import MessageRow
from ..errors import DeliveryError
from .records import DEFERRED, SENDING, SENT

if TYPE_CHECKING:  # store.py imports this module for takeover_values()
    from .store import Outbox

IN_DOUBT = "in_doubt"
CONFIRMED = "confirmed"  # found in Sent Items: marked sent without sending again
LOOKED_UP = "not_in_sent_yet"  # not found yet; looked up again later
RESENT = "resend_checked"  # not found after the settle time: sent again
POSSIBLE_DUPLICATE = "possible_duplicate"  # could not be checked: sent again, may arrive twice
TAKEOVER_DETAIL = (
    "the worker holding the previous attempt stopped without recording its outcome (lease expired): "
    "the message may have been sent"
)


def takeover_values(now: datetime) -> dict[str, Any]:
    """SET values for any UPDATE that takes messages back from a dead owner: SENDING ones become in doubt.

    The CASE reads the row's old status (SQL evaluates SET expressions against the row before the update),
    so the same values are right in a claim that also picks up queued and deferred mail."""
    return {"doubt_since": case((MessageRow.status == SENDING, now), else_=MessageRow.doubt_since)}


def taken_over(doubt_since: datetime | None, now: datetime) -> bool:
    """Whether a claimed row's doubt was set by this very takeover (for the event that says so)."""
    return doubt_since is not None and abs((doubt_since - now).total_seconds()) < 0.001


def _apply(session: Session, message_id: int, owner: str, values: dict[str, Any]) -> bool:
    from .store import _apply as apply

    return apply(session, message_id, owner, values)


def _event(
    session: Session, message_id: int, at: datetime, kind: str, detail: str, request_id: str | None = None
) -> None:
    from .store import _event as event

    event(session, message_id, at, kind, detail, request_id)


class Doubts:
    """The outbox writes of the in-doubt state; each is fenced by the lease owner like every outcome."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def _now(self) -> datetime:
        return self.outbox.clock.now()

    def record(self, message_id: int, owner: str, error: DeliveryError | None, first_lookup: datetime) -> bool:
        """The attempt's outcome is unknown: defer the message to its first Sent Items lookup."""
        now = self._now()
        values: dict[str, Any] = {
            "status": DEFERRED,
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": first_lookup,
            "updated_at": now,
            "doubt_since": now,
        }
        if error is not None:
            values.update(last_error_kind=error.kind, last_error_message=error.message[:4000],
                          last_error_remedy=error.remedy, last_error_code=None, last_error_status=None,
                          last_error_request_id=None)  # fmt: skip
        detail = (error.message if error else "the worker stopped while the request was on the wire") + (
            "; the outcome is unknown, so the message is looked up in Sent Items before any resend"
        )

        def write(session: Session) -> bool:
            done = _apply(session, message_id, owner, values)
            if done:
                _event(session, message_id, now, IN_DOUBT, detail)
            return done

        return self.outbox._write(write)

    def confirm(self, message_id: int, owner: str, detail: str, request_id: str | None) -> bool:
        """Found in Sent Items: it was sent. Recorded even if the lease was lost meanwhile, like mark_sent."""
        now = self._now()

        def write(session: Session) -> bool:
            result = session.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id, MessageRow.status != SENT)
                .values(
                    status=SENT, sent_at=now, updated_at=now, lease_owner=None, lease_expires_at=None, doubt_since=None
                )
            )
            done = bool(getattr(result, "rowcount", 0))
            if done:
                _event(session, message_id, now, CONFIRMED, detail, request_id)
            return done

        return self.outbox._write(write)

    def look_again(self, message_id: int, owner: str, at: datetime, detail: str) -> bool:
        """Not found yet: come back at ``at``. A lookup is not a send attempt, so it is not counted as one."""
        now = self._now()
        values = {
            "status": DEFERRED,
            "lease_owner": None,
            "lease_expires_at": None,
            "next_attempt_at": at,
            "updated_at": now,
            "attempts": MessageRow.attempts - 1,
        }

        def write(session: Session) -> bool:
            done = _apply(session, message_id, owner, values)
            if done:
                _event(session, message_id, now, LOOKED_UP, detail)
            return done

        return self.outbox._write(write)

    def resolve(self, message_id: int, owner: str, kind: str, detail: str) -> bool:
        """The doubt ends in a resend (``RESENT`` after a check, ``POSSIBLE_DUPLICATE`` without one); the
        message stays claimed for the send that follows."""
        now = self._now()
        values = {"doubt_since": None, "draft_id": None, "draft_message_id": None, "updated_at": now}

        def write(session: Session) -> bool:
            done = _apply(session, message_id, owner, values)
            if done:
                _event(session, message_id, now, kind, detail)
            return done

        return self.outbox._write(write)

    def note_draft(self, message_id: int, owner: str, draft_id: str, internet_message_id: str | None) -> bool:
        """A large message's draft exists and is about to be sent: remember it for an in-doubt `send`."""
        values = {"draft_id": draft_id[:512], "draft_message_id": (internet_message_id or "")[:998] or None}
        return self.outbox._write(lambda session: _apply(session, message_id, owner, values))

    def store_message_id(self, message_id: int, value: str) -> None:
        """Store the Message-ID added at send time to a message accepted without one (older rows)."""

        def write(session: Session) -> None:
            session.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id, MessageRow.message_id.is_(None))
                .values(message_id=value[:998])
            )

        self.outbox._write(write)
