"""Which mailbox sends a message, and what holds one mailbox back while the others go on.

A connector sends through its User Name mailbox and through each send-as mailbox (PROTOCOL.md §15). The
mailbox is chosen at dispatch from the message's stored From — the From *after* the policy, fixed at
acceptance — and the connector's current list. Deciding there, not at acceptance, needs no new column on
every ingress path (SMTP, API, library, Django), and an administrator who lists or removes an address sees
queued mail follow the list at once; the From itself, which is what recipients see, never changes.

Microsoft's limits are per app *and mailbox* (§7), so throttling (429 Retry-After), a spent budget and a
mailbox that does not exist or may not be used (404 ErrorInvalidUser / MailboxNotEnabledForRESTAPI, 403
access policy) hold only that mailbox: its mail waits with the reason, the connector's other mailboxes go
on. Trouble with the app itself (secret, consent, the token service) still pauses or blocks the connector,
and a missing User Name mailbox still pauses the connector, as it did before send-as mailboxes: it is the
mailbox the connector's checks and probes use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr

from ..connectors import ConnectorConfig
from ..errors import AccessPolicyError, DeliveryError, MailboxNotEnabledError, MailboxNotFoundError

MAILBOX_RECHECK_SECONDS = 300.0  # a missing send-as mailbox is tried again this often (as a paused connector is)
MAILBOX_ERRORS = (MailboxNotFoundError, MailboxNotEnabledError, AccessPolicyError)


def mailbox_of(connector: ConnectorConfig, header_from: str | None) -> str:
    """ "" for the User Name mailbox, else the send-as mailbox the stored From names."""
    return connector.mailbox_for(parseaddr(header_from or "")[1])


def label(connector: ConnectorConfig, mailbox: str) -> str:
    return connector.mailbox_address(mailbox)


def missing_mailbox(connector: ConnectorConfig, mailbox: str, exc: Exception, now: datetime) -> Hold | None:
    """A send-as mailbox that is missing or barred is that mailbox's trouble, not the connector's: the hold
    for its mail, or None for any other failure."""
    if not mailbox or not isinstance(exc, MAILBOX_ERRORS):
        return None
    why = f"mailbox {label(connector, mailbox)} cannot send: {exc.message}; its mail waits (checked every 5 min)"
    return Hold(now + timedelta(seconds=MAILBOX_RECHECK_SECONDS), why, exc)


@dataclass
class Hold:
    until: datetime
    reason: str
    error: DeliveryError | None = None


class MailboxHolds:
    """The holds of this process, per (connector id, mailbox)."""

    def __init__(self) -> None:
        self._holds: dict[tuple[int, str], Hold] = {}

    def hold(self, connector_id: int, mailbox: str, hold: Hold) -> None:
        current = self._holds.get((connector_id, mailbox))
        if current is None or current.until < hold.until:
            self._holds[(connector_id, mailbox)] = hold

    def current(self, connector_id: int, mailbox: str, now: datetime) -> Hold | None:
        hold = self._holds.get((connector_id, mailbox))
        if hold is not None and hold.until <= now:
            del self._holds[(connector_id, mailbox)]
            return None
        return hold

    def all_held(self, connector: ConnectorConfig, now: datetime) -> bool:
        """Every mailbox this connector can send from is held: claiming would only bring mail back. A
        connector with an ``@domain`` entry can always have mail for a mailbox not seen yet."""
        if any(entry.startswith("@") for entry in connector.send_as):
            return False
        return all(self.current(connector.id, m, now) is not None for m in connector.known_mailboxes)
