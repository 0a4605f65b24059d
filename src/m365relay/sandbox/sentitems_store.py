"""The Sent Items copies the sandbox has filed, per mailbox (the routes are in `sentitems.py`)."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from .mailstore import CapturedMessage

DEFAULT_DELAY_SECONDS = 2.0  # Exchange files the copy asynchronously, usually within seconds [obs]
DEFAULT_CAPACITY = 200_000  # like the captured-mail store: a benchmark must not exhaust memory


@dataclass(frozen=True)
class SentItem:
    """The Sent Items copy of one captured message."""

    id: str
    mailbox: str
    internet_message_id: str
    captured_id: str
    sent_at: float
    visible_at: float
    subject: str
    from_address: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]


class SentItemsStore:
    """Copies by id, newest last; bounded like the captured-mail store."""

    def __init__(self, delay: float = DEFAULT_DELAY_SECONDS, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.delay = delay  # seconds between the 202 and the copy becoming visible
        self._items: OrderedDict[str, SentItem] = OrderedDict()

    def file(self, captured: CapturedMessage, now: float) -> SentItem:
        item = SentItem(
            id="AAMkAD" + secrets.token_urlsafe(48),
            mailbox=captured.mailbox,
            internet_message_id=captured.message_id.strip(),
            captured_id=captured.id,
            sent_at=captured.received_at,
            visible_at=now + self.delay,
            subject=captured.subject,
            from_address=captured.from_address,
            to=captured.to,
            cc=captured.cc,
            bcc=captured.bcc,
        )
        self._items[item.id] = item
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return item

    def visible(self, mailbox: str, now: float) -> list[SentItem]:
        """The mailbox's filed copies, newest first (Exchange's default order for a folder)."""
        wanted = mailbox.lower()
        return [i for i in reversed(self._items.values()) if i.mailbox.lower() == wanted and i.visible_at <= now]

    def get(self, mailbox: str, item_id: str, now: float) -> SentItem | None:
        item = self._items.get(item_id)
        if item is None or item.mailbox.lower() != mailbox.lower() or item.visible_at > now:
            return None
        return item

    def pending(self, now: float) -> int:
        return sum(1 for i in self._items.values() if i.visible_at > now)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
