"""The Outlook/Exchange limits a client must stay inside (PROTOCOL.md §7), per app+mailbox.

- concurrency: requests in flight per app+mailbox (a request holds its slot through the
  configured latency, as a slow Exchange backend would);
- request budget: requests per rolling 10 minutes per app+mailbox;
- recipient budget: recipients per rolling 24 hours per mailbox, whatever app sends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .clock import Clock
from .directory import Limits

REQUEST_WINDOW = 600.0
RECIPIENT_WINDOW = 86_400.0


@dataclass(frozen=True)
class Throttle:
    """Why a request was refused and when to come back (seconds, possibly fractional)."""

    reason: str
    retry_after: float
    code: str
    message: str


class LimitTracker:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.in_flight: dict[str, int] = {}
        self._requests: dict[str, deque[float]] = {}
        self._recipients: dict[str, deque[tuple[float, int]]] = {}
        self._recipient_totals: dict[str, int] = {}

    def enter(self, key: str, limits: Limits) -> Throttle | None:
        """Take a concurrency slot and a request-budget unit, or say why not."""
        current = self.in_flight.get(key, 0)
        if current >= limits.concurrency:
            return Throttle(
                "concurrency",
                limits.concurrency_retry_after,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            )
        now = self.clock.now()
        window = self._requests.setdefault(key, deque())
        while window and window[0] <= now - REQUEST_WINDOW:
            window.popleft()
        if len(window) >= limits.requests_per_10min:
            return Throttle(
                "request_budget",
                max(0.001, window[0] + REQUEST_WINDOW - now),
                "ApplicationThrottled",
                "Application is over its MailboxRequests limit.",
            )
        window.append(now)
        self.in_flight[key] = current + 1
        return None

    def leave(self, key: str) -> None:
        remaining = self.in_flight.get(key, 1) - 1
        if remaining <= 0:
            self.in_flight.pop(key, None)
        else:
            self.in_flight[key] = remaining

    def _prune(self, mailbox: str, now: float) -> deque[tuple[float, int]]:
        sent = self._recipients.setdefault(mailbox, deque())
        while sent and sent[0][0] <= now - RECIPIENT_WINDOW:
            _, count = sent.popleft()
            self._recipient_totals[mailbox] -= count
        self._recipient_totals.setdefault(mailbox, 0)
        return sent

    def check_recipients(self, mailbox: str, count: int, limits: Limits) -> Throttle | None:
        """Refuse a message that would push the mailbox past its rolling 24 h recipient budget.

        Exchange blocks sending "until the number of recipients in the past 24 hours drops below
        the limit"; Retry-After says when enough of the window has drained for this message.
        """
        key = mailbox.lower()
        now = self.clock.now()
        sent = self._prune(key, now)
        total = self._recipient_totals[key]
        limit = limits.recipients_per_24h
        if total + count <= limit:
            return None
        retry_after = RECIPIENT_WINDOW
        if count <= limit:
            freed = 0
            for moment, n in sent:
                freed += n
                if total - freed + count <= limit:
                    retry_after = moment + RECIPIENT_WINDOW - now
                    break
        return Throttle(
            "recipient_budget",
            max(0.001, retry_after),
            "ErrorSubmissionQuotaExceeded",
            f"The mailbox has reached its limit of {limit} recipients per 24 hours; "
            "sending resumes as older messages leave the rolling window.",
        )

    def commit_recipients(self, mailbox: str, count: int) -> None:
        key = mailbox.lower()
        sent = self._prune(key, self.clock.now())
        sent.append((self.clock.now(), count))
        self._recipient_totals[key] += count

    def recipients_used(self, mailbox: str) -> int:
        key = mailbox.lower()
        self._prune(key, self.clock.now())
        return self._recipient_totals[key]
