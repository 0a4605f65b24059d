"""Per-recipient delivery states, and the one way bounce/delay/suppression events enter the event log.

A message's recipients are ``sent`` once the message is (Graph's 202 means "queued by Exchange"); a later
report can turn one into ``bounced`` or ``delayed``, and acceptance can mark one ``suppressed`` (dropped
before sending). Only those exceptions are stored (``message_recipients``); every other recipient takes
its message's status, so the hot paths (enqueue, mark_sent) write nothing extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import MessageRecipientRow, MessageRow
from .records import SENT
from .store import _event

BOUNCED, DELAYED, SUPPRESSED = "bounced", "delayed", "suppressed"
# A later state may replace an earlier one, never the reverse: a final failure outranks a delay notice.
_RANK = {SENT: 0, DELAYED: 1, BOUNCED: 2, SUPPRESSED: 2}


@dataclass(frozen=True)
class RecipientState:
    address: str
    state: str
    status: str | None
    diagnostic: str | None
    at: datetime | None

    def view(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "state": self.state,
            "status": self.status,
            "diagnostic": self.diagnostic,
            "at": self.at.isoformat() if self.at else None,
        }


def status_condition(status: str) -> Any:
    """``bounced`` is not a message status but a recipient state: messages with at least one bounced recipient."""
    if status == BOUNCED:
        bounced = select(MessageRecipientRow.message_id).where(MessageRecipientRow.state == BOUNCED)
        return MessageRow.id.in_(bounced)
    return MessageRow.status == status


def record_event(session: Session, message_id: int, kind: str, detail: str | None, at: datetime) -> None:
    """Append to the message's event log (the webhook engine hooks onto this). ``detail``: a JSON object string."""
    _event(session, message_id, at, kind, detail)


def event_detail(recipient: str, status: str | None, diagnostic: str | None, reported_at: datetime) -> str:
    return json.dumps(
        {"recipient": recipient, "status": status, "diagnostic": diagnostic, "reported_at": reported_at.isoformat()}
    )


def set_state(
    session: Session,
    message_id: int,
    address: str,
    state: str,
    *,
    status: str | None,
    diagnostic: str | None,
    at: datetime,
) -> bool:
    """Record a recipient's new state and its event; False (and nothing written) when it is not news.

    Idempotent on purpose: two processes, or one re-reading after a crash, may see the same report twice
    and the recipient must be bounced once."""
    key = address.lower()
    row = session.get(MessageRecipientRow, (message_id, key), with_for_update=True)
    if row is not None and (_RANK[row.state] > _RANK[state] or (row.state == state and row.status == status)):
        return False
    if row is None:
        session.add(
            MessageRecipientRow(
                message_id=message_id, address=key, state=state, status=status, diagnostic=diagnostic, at=at
            )
        )
    else:
        row.state, row.status, row.diagnostic, row.at = state, status, diagnostic, at
    record_event(session, message_id, state, event_detail(key, status, diagnostic, at), at)
    return True


def states(session: Session, message: MessageRow | Any) -> list[RecipientState]:
    """Every recipient of ``message`` (a row or a MessageRecord) with its state."""
    return states_of(session, [message])[message.id]


def states_of(session: Session, messages: list[Any]) -> dict[int, list[RecipientState]]:
    """The recipients' states of several messages in one query (lists of messages)."""
    ids = [m.id for m in messages]
    stored: dict[int, dict[str, MessageRecipientRow]] = {i: {} for i in ids}
    if ids:
        for row in session.scalars(select(MessageRecipientRow).where(MessageRecipientRow.message_id.in_(ids))):
            stored[row.message_id][row.address] = row
    return {m.id: _merge(m, stored[m.id]) for m in messages}


def _merge(message: Any, stored: dict[str, MessageRecipientRow]) -> list[RecipientState]:
    base = message.status
    out: list[RecipientState] = []
    for address in message.recipients:
        row = stored.pop(address.lower(), None)
        if row is None:
            out.append(RecipientState(address, base, None, None, message.sent_at if base == SENT else None))
        else:
            out.append(RecipientState(address, row.state, row.status, row.diagnostic, row.at))
    # Suppressed recipients were dropped from the envelope at acceptance: they exist only here.
    out += [RecipientState(r.address, r.state, r.status, r.diagnostic, r.at) for r in stored.values()]
    return out


@dataclass(frozen=True)
class BounceRate:
    recipients: int  # recipients of mail sent in the window
    bounced: int  # of them, reported bounced

    @property
    def rate(self) -> float:
        return self.bounced / self.recipients if self.recipients else 0.0


WARN_RATE = 0.05  # Exchange Online may restrict a mailbox that sends too much undeliverable mail


def bounce_rates(session: Session, since: datetime) -> dict[int, BounceRate]:
    """Per connector: recipients of mail sent since ``since``, and how many of them bounced."""
    from sqlalchemy import func

    sent = dict(
        session.execute(
            select(MessageRow.connector_id, func.sum(MessageRow.recipient_count))
            .where(MessageRow.status == SENT, MessageRow.sent_at >= since)
            .group_by(MessageRow.connector_id)
        ).all()
    )
    bounced = dict(
        session.execute(
            select(MessageRow.connector_id, func.count())
            .join(MessageRecipientRow, MessageRecipientRow.message_id == MessageRow.id)
            .where(MessageRecipientRow.state == BOUNCED, MessageRow.sent_at >= since)
            .group_by(MessageRow.connector_id)
        ).all()
    )
    return {cid: BounceRate(int(sent.get(cid) or 0), int(bounced.get(cid) or 0)) for cid in set(sent) | set(bounced)}
