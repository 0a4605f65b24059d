"""Each mailbox's Inbox: the reports Exchange files after a send, the delta query and `$value` (PROTOCOL.md §12–13).

Which recipients cannot receive, the way Exchange Online decides it:

* an address at one of a sandbox tenant's own domains that is not in its directory → 5.1.10
  ``RESOLVER.ADR.RecipientNotFound``;
* any address at a ``*.invalid`` domain (RFC 2606: never resolves) → 5.1.1;
* a seeded per-address outcome: ``bounce X.Y.Z``, ``delay then bounce`` (a 4.4.7 "Delivery delayed:" notice,
  the final failure after ``final_after_seconds``) or ``auto-reply``.

Reports arrive ``ndr_delay_seconds`` (sandbox clock) after the send, as they do from a real queue; an item
becomes visible only then, and gets its place in the delta order when it does, so a delta round never skips
a report that was sent earlier but arrived later.
"""

from __future__ import annotations

import base64
import email
import email.policy
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

from . import ndr
from .clock import iso_z
from .rfc5322 import read_envelope

if TYPE_CHECKING:
    from .mailstore import CapturedMessage
    from .state import Sandbox

DEFAULT_NDR_DELAY = 2.0
DEFAULT_FINAL_AFTER = 86_400.0  # Exchange gives up on a deferred recipient after about a day [obs]


@dataclass
class InboxItem:
    id: str
    mailbox: str
    raw: bytes
    subject: str
    from_address: str
    from_name: str
    internet_message_id: str
    arrives_at: float
    seq: int = 0  # 0 until visible


@dataclass
class Inbox:
    """All mailboxes' Inbox items (visible and in transit) and the seeded outcomes."""

    ndr_delay: float = DEFAULT_NDR_DELAY
    final_after: float = DEFAULT_FINAL_AFTER
    outcomes: dict[str, str] = field(default_factory=dict)
    _items: dict[str, InboxItem] = field(default_factory=dict)
    _pending: list[InboxItem] = field(default_factory=list)
    _seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_seed(cls, seed: dict[str, Any]) -> Inbox:
        inbox = cls()
        inbox.configure(seed.get("inbox") or {})
        return inbox

    def configure(self, data: dict[str, Any]) -> None:
        """Validate everything first: on a bad value nothing changes."""
        delay = float(data.get("ndr_delay_seconds", self.ndr_delay))
        final = float(data.get("final_after_seconds", self.final_after))
        outcomes = data.get("outcomes", self.outcomes)
        if delay < 0 or final < 0:
            raise ValueError("ndr_delay_seconds and final_after_seconds must not be negative")
        if not isinstance(outcomes, dict):
            raise ValueError("outcomes must be an object of address → outcome")
        parsed = {str(k).lower(): str(v).strip().lower() for k, v in outcomes.items()}
        for address, outcome in parsed.items():
            if parse_outcome(outcome) is None:
                raise ValueError(
                    f"outcome for {address}: {outcome!r}; use 'bounce X.Y.Z', 'delay then bounce' or 'auto-reply'"
                )
        self.ndr_delay, self.final_after, self.outcomes = delay, final, parsed

    def to_dict(self) -> dict[str, Any]:
        return {"ndr_delay_seconds": self.ndr_delay, "final_after_seconds": self.final_after, "outcomes": self.outcomes}

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._pending.clear()

    def file(self, mailbox: str, raw: bytes, arrives_at: float) -> InboxItem:
        envelope = read_envelope(raw)
        name, address = parseaddr(_header(raw, "From"))
        item = InboxItem(
            id=_graph_id(),
            mailbox=mailbox.lower(),
            raw=raw,
            subject=envelope.subject,
            from_address=address,
            from_name=name,
            internet_message_id=envelope.message_id or "",
            arrives_at=arrives_at,
        )
        with self._lock:
            self._pending.append(item)
        return item

    def _arrive(self, now: float) -> None:
        with self._lock:
            due = sorted((i for i in self._pending if i.arrives_at <= now), key=lambda i: i.arrives_at)
            for item in due:
                self._seq += 1
                item.seq = self._seq
                self._items[item.id] = item
            self._pending = [i for i in self._pending if i.arrives_at > now]

    def visible(self, mailbox: str, now: float, after: int = 0, upto: int | None = None) -> list[InboxItem]:
        self._arrive(now)
        with self._lock:
            return [
                i
                for i in self._items.values()
                if i.mailbox == mailbox.lower() and i.seq > after and (upto is None or i.seq <= upto)
            ]

    def high_water(self, now: float) -> int:
        self._arrive(now)
        return self._seq

    def get(self, mailbox: str, item_id: str, now: float) -> InboxItem | None:
        self._arrive(now)
        item = self._items.get(item_id)
        return item if item is not None and item.mailbox == mailbox.lower() else None


def _header(raw: bytes, name: str) -> str:
    parsed = email.message_from_bytes(raw.partition(b"\r\n\r\n")[0] + b"\r\n\r\n", policy=email.policy.compat32)
    return str(parsed.get(name, ""))


def _graph_id() -> str:
    # Graph item ids are long URL-safe base64 strings; their shape is all a client may rely on.
    return base64.urlsafe_b64encode(b"AAMk" + uuid.uuid4().bytes + uuid.uuid4().bytes).decode().rstrip("=")


def parse_outcome(text: str) -> tuple[str, str | None] | None:
    """``bounce 5.2.2`` → ("bounce", "5.2.2"); ``delay then bounce``; ``auto-reply``; else None."""
    words = text.split()
    if len(words) == 2 and words[0] == "bounce" and _status_ok(words[1]):
        return "bounce", words[1]
    if text == "delay then bounce":
        return "delay", None
    if text in ("auto-reply", "autoreply"):
        return "auto-reply", None
    return None


def _status_ok(status: str) -> bool:
    parts = status.split(".")
    return len(parts) == 3 and parts[0] in ("4", "5") and all(p.isdigit() for p in parts)


# -- what happens after a send ------------------------------------------------------------------------


def _fate(sandbox: Sandbox, address: str) -> tuple[str, str | None] | None:
    key = address.lower()
    seeded = sandbox.inbox.outcomes.get(key)
    if seeded is not None:
        return parse_outcome(seeded)
    domain = key.rpartition("@")[2]
    if domain == "invalid" or domain.endswith(".invalid"):
        return "bounce", "5.1.1"
    directory = sandbox.directory
    own = any(domain in t.domains for t in directory.tenants.values())
    if own and directory.find_mailbox(key) is None:
        return "bounce", "5.1.10"
    return None


def after_send(sandbox: Sandbox, captured: CapturedMessage) -> None:
    """File the reports Exchange would send back to the sending mailbox for this message."""
    inbox, now = sandbox.inbox, sandbox.clock.now()
    sending = sandbox.directory.find_mailbox(captured.mailbox)
    tenant = sandbox.directory.tenants.get(sending.tenant) if sending is not None else None
    domains = tenant.domains if tenant is not None else ()
    failed: list[tuple[str, ndr.Failure]] = []
    delayed: list[tuple[str, ndr.Failure]] = []
    for address in (*captured.to, *captured.cc, *captured.bcc):
        fate = _fate(sandbox, address)
        if fate is None:
            continue
        kind, status = fate
        if kind == "bounce" and status is not None:
            failed.append((address, ndr.failure_for(status)))
        elif kind == "delay":
            delayed.append((address, ndr.Failure("4.4.7", "400 4.4.7 Message delayed", action="delayed")))
        else:
            reply = ndr.auto_reply(
                recipient=address,
                sender=captured.mailbox,
                original_subject=captured.subject,
                original_id=captured.message_id,
                now=now + inbox.ndr_delay,
            )
            inbox.file(captured.mailbox, reply, now + inbox.ndr_delay)

    def report(recipients: list[tuple[str, ndr.Failure]], at: float) -> None:
        raw = ndr.exchange_report(
            original=captured.raw,
            original_subject=captured.subject,
            sender=captured.mailbox,
            tenant_domains=domains,
            recipients=recipients,
            now=at,
            arrived=captured.received_at,
        )
        inbox.file(captured.mailbox, raw, at)

    if failed:
        report(failed, now + inbox.ndr_delay)
    if delayed:
        report(delayed, now + inbox.ndr_delay)
        expired = [(a, ndr.failure_for("4.4.7")) for a, _ in delayed]
        report(expired, now + inbox.ndr_delay + inbox.final_after)


def message_json(item: InboxItem) -> dict[str, Any]:
    received = iso_z(datetime.fromtimestamp(item.arrives_at, tz=UTC))
    sender = {"emailAddress": {"name": item.from_name or item.from_address, "address": item.from_address}}
    return {
        "@odata.type": "#microsoft.graph.message",
        "@odata.etag": f'W/"{item.seq}"',
        "id": item.id,
        "receivedDateTime": received,
        "subject": item.subject,
        "internetMessageId": item.internet_message_id,
        "from": sender,
        "sender": sender,
        "isRead": False,
        "parentFolderId": "inbox",
    }


def summaries(sandbox: Sandbox, mailbox: str | None = None) -> list[dict[str, Any]]:
    """Visible Inbox items, newest first, for the viewer and `GET /_sandbox/inbox`."""
    now = sandbox.clock.now()
    mailboxes = [mailbox] if mailbox else list(sandbox.directory.mailboxes)
    found = [i for m in mailboxes for i in sandbox.inbox.visible(m, now)]
    return [
        {**message_json(i), "mailbox": i.mailbox, "size": len(i.raw)}
        for i in sorted(found, key=lambda i: i.seq, reverse=True)
    ]
