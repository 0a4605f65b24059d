"""The suppression list: addresses a connector stops mailing after a hard bounce (docs/delivery.md).

Sending again and again to an address that does not exist is what gets a Microsoft 365 mailbox restricted
for undeliverable mail; so after a hard bounce the address is suppressed for ``M365RELAY_SUPPRESSION_DAYS``
per connector. What counts as hard is a configurable list of RFC 3463 status codes or classes (prefixes:
``5.1`` matches 5.1.1 and 5.1.10). Codes that say the *sending* tenant is restricted (5.7.705, 5.7.708,
5.7.750: Exchange Online's outbound protection, PROTOCOL.md §13) never suppress a recipient.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from . import audit
from .db.engine import Database
from .db.models import SuppressionRow
from .errors import NotFoundError, ValidationError

SENDER_SIDE = frozenset({"5.7.705", "5.7.708", "5.7.750"})
DEFAULT_STATUSES = ("5.1", "5.2.1", "5.4.1")


def is_hard(status: str | None, statuses: Iterable[str] = DEFAULT_STATUSES) -> bool:
    """Whether ``status`` (e.g. 5.1.10) is a hard bounce under the configured list."""
    if not status or status in SENDER_SIDE or not status.startswith("5."):
        return False
    parts = status.split(".")
    for prefix in statuses:
        wanted = prefix.strip().split(".")
        if wanted and parts[: len(wanted)] == wanted:
            return True
    return False


@dataclass(frozen=True)
class Suppression:
    id: int
    connector_id: int
    address: str
    status: str | None
    diagnostic: str | None
    bounced_at: datetime
    message_id: int | None
    source: str
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def from_row(cls, row: SuppressionRow) -> Suppression:
        return cls(
            row.id,
            row.connector_id,
            row.address,
            row.status,
            row.diagnostic,
            row.bounced_at,
            row.message_id,
            row.source,
            row.created_at,
            row.expires_at,
        )

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "connector_id": self.connector_id,
            "address": self.address,
            "status": self.status,
            "diagnostic": self.diagnostic,
            "bounced_at": self.bounced_at.isoformat(),
            "message_id": self.message_id,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }

    def refusal(self) -> str:
        """The text after ``550 5.1.1`` when mail to this address is refused."""
        day = self.bounced_at.date().isoformat()
        code = self.status or "manual"
        why = (self.diagnostic or "added by an administrator").replace("\r", " ").replace("\n", " ")[:200]
        return f"<{self.address}> is suppressed after a hard bounce on {day} ({code}): {why}"


def _active(now: datetime) -> Any:
    return or_(SuppressionRow.expires_at.is_(None), SuppressionRow.expires_at > now)


class Suppressions:
    def __init__(self, db: Database, *, days: int = 30, statuses: Iterable[str] = DEFAULT_STATUSES) -> None:
        self.db = db
        self.days = days
        self.statuses = tuple(statuses)

    @property
    def enabled(self) -> bool:
        return self.days > 0

    def _expiry(self, now: datetime) -> datetime:
        return now + timedelta(days=self.days)

    def from_bounce(
        self,
        session: Session,
        *,
        connector_id: int,
        address: str,
        status: str | None,
        diagnostic: str | None,
        bounced_at: datetime,
        message_id: int | None,
    ) -> bool:
        """Suppress after a hard bounce, inside the caller's transaction; True when an entry was made or renewed."""
        if not self.enabled or not is_hard(status, self.statuses):
            return False
        key, now = address.lower(), datetime.now(UTC)
        row = session.scalar(
            select(SuppressionRow)
            .where(SuppressionRow.connector_id == connector_id, SuppressionRow.address == key)
            .with_for_update()
        )
        if row is None:
            session.add(
                SuppressionRow(
                    connector_id=connector_id,
                    address=key,
                    status=status,
                    diagnostic=diagnostic,
                    bounced_at=bounced_at,
                    message_id=message_id,
                    source="bounce",
                    created_at=now,
                    expires_at=self._expiry(bounced_at),
                )
            )
        else:
            row.status, row.diagnostic, row.bounced_at, row.message_id = status, diagnostic, bounced_at, message_id
            row.source, row.expires_at = "bounce", self._expiry(bounced_at)
        audit.record(session, "bounce-intake", "suppression.add", key, {"connector_id": connector_id, "status": status})
        return True

    def add(
        self, connector_id: int, address: str, *, actor: str, reason: str | None = None, days: int | None = None
    ) -> Suppression:
        key = address.strip().lower()
        if "@" not in key or len(key) > 320 or any(c.isspace() for c in key):
            raise ValidationError("address", f"{address!r} is not an e-mail address", key="address")
        now = datetime.now(UTC)
        expires = now + timedelta(days=days if days is not None else (self.days or 30))
        with self.db.write() as session:
            row = session.scalar(
                select(SuppressionRow).where(SuppressionRow.connector_id == connector_id, SuppressionRow.address == key)
            )
            if row is None:
                row = SuppressionRow(connector_id=connector_id, address=key, created_at=now, source="manual")
                session.add(row)
            row.status, row.diagnostic, row.bounced_at, row.message_id = None, reason, now, None
            row.source, row.expires_at = "manual", expires
            audit.record(session, actor, "suppression.add", key, {"connector_id": connector_id, "reason": reason})
            session.flush()
            return Suppression.from_row(row)

    def remove(self, connector_id: int, address: str, *, actor: str) -> Suppression:
        key = address.strip().lower()
        with self.db.write() as session:
            row = session.scalar(
                select(SuppressionRow).where(SuppressionRow.connector_id == connector_id, SuppressionRow.address == key)
            )
            if row is None:
                raise NotFoundError(f"{key} is not suppressed for connector {connector_id}")
            found = Suppression.from_row(row)
            session.delete(row)
            audit.record(session, actor, "suppression.remove", key, {"connector_id": connector_id})
            return found

    def list(self, connector_id: int | None = None, *, include_expired: bool = False) -> list[Suppression]:
        query = select(SuppressionRow).order_by(SuppressionRow.bounced_at.desc(), SuppressionRow.id.desc())
        if connector_id is not None:
            query = query.where(SuppressionRow.connector_id == connector_id)
        if not include_expired:
            query = query.where(_active(datetime.now(UTC)))
        with self.db.read() as session:
            return [Suppression.from_row(r) for r in session.scalars(query)]

    def find(self, connector_id: int, addresses: Iterable[str]) -> dict[str, Suppression]:
        """The active entries among ``addresses`` (lower-cased keys)."""
        keys = sorted({a.lower() for a in addresses})
        if not keys or not self.enabled:
            return {}
        query = select(SuppressionRow).where(
            SuppressionRow.connector_id == connector_id, SuppressionRow.address.in_(keys), _active(datetime.now(UTC))
        )
        with self.db.read() as session:
            return {r.address: Suppression.from_row(r) for r in session.scalars(query)}

    def screen(
        self, connector_id: int, recipients: builtins.list[str]
    ) -> tuple[builtins.list[str], dict[str, Suppression]]:
        """Split recipients at acceptance: (those to send to, the suppressed ones with their entries)."""
        found = self.find(connector_id, recipients)
        return [r for r in recipients if r.lower() not in found], found

    def at_acceptance(
        self, connector_id: int, envelope: builtins.list[str] | None, header_recipients: builtins.list[str]
    ) -> tuple[builtins.list[str] | None, dict[str, Suppression]]:
        """The envelope to enqueue with (None: unchanged) and the dropped recipients; raises
        ``AllSuppressedError`` when nobody is left. Every ingress but SMTP (which refuses at RCPT) calls this."""
        recipients = envelope if envelope is not None else header_recipients
        kept, dropped = self.screen(connector_id, recipients)
        if not dropped:
            return envelope, {}
        if not kept:
            raise AllSuppressedError(dropped)
        return kept, dropped

    def record_dropped(self, message_id: int, dropped: dict[str, Suppression]) -> None:
        """Mark recipients dropped at acceptance as ``suppressed`` on the new message (with their events)."""
        from .outbox.recipients import SUPPRESSED, set_state

        now = datetime.now(UTC)
        with self.db.write() as session:
            for address, entry in dropped.items():
                set_state(
                    session, message_id, address, SUPPRESSED, status=entry.status, diagnostic=entry.refusal(), at=now
                )


def refusal_detail(dropped: dict[str, Suppression]) -> str:
    """The 422 problem's detail when every recipient of a message is suppressed."""
    return "Every recipient is suppressed after a hard bounce: " + "; ".join(e.refusal() for e in dropped.values())


class AllSuppressedError(ValidationError):
    """Every recipient of a new message is on the connector's suppression list: nothing would be sent."""

    def __init__(self, dropped: dict[str, Suppression]) -> None:
        super().__init__(
            "recipients",
            refusal_detail(dropped),
            key="to",
            remedy="Check the addresses; `m365relay suppression rm ADDRESS` allows one again.",
        )
        self.dropped = dropped
