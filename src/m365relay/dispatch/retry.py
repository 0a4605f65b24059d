"""What to do after a failed attempt: a policy object that returns a decision (STYLE.md §4), so it can be
tested with a fake clock and a fixed random source, without sleeping.

* the message is at fault (``MessageError``) → fail it now, with the reason and remedy;
* the connector's setup is at fault (``ConnectorError``) → pause the connector; the message waits;
* anything else is temporary → retry after ``Retry-After`` when Graph sent one (fractional seconds
  honoured exactly), otherwise after an exponential backoff with jitter — unless that would pass the
  queue lifetime, in which case the message fails with the reason.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from ..errors import ConnectorError, DeliveryError, MessageError

Action = Literal["retry", "fail", "pause"]


@dataclass(frozen=True)
class RetryDecision:
    action: Action
    delay: float  # seconds until the next attempt (retry) or the next probe (pause); 0 for fail
    reason: str


class RetryPolicy:
    def __init__(
        self,
        *,
        base: float = 5.0,
        maximum: float = 900.0,
        lifetime: timedelta = timedelta(days=5),
        probe_base: float = 30.0,
        probe_max: float = 900.0,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        self.base = base
        self.maximum = maximum
        self.lifetime = lifetime
        self.probe_base = probe_base
        self.probe_max = probe_max
        self.random_fraction = random_fraction

    def backoff(self, attempts: int) -> float:
        """base · 2^(attempts−1), capped; jitter spreads it over [½, 1] of that so retries do not align."""
        ceiling = min(self.maximum, self.base * 2.0 ** max(0, attempts - 1))
        return ceiling * (0.5 + 0.5 * self.random_fraction())

    def probe_delay(self, probe_attempts: int) -> float:
        return min(self.probe_max, self.probe_base * 2.0 ** max(0, probe_attempts - 1))

    def decide(self, error: BaseException, *, attempts: int, expires_at: datetime, now: datetime) -> RetryDecision:
        """``expires_at`` is the message's own deadline: created + lifetime, or later if an operator retried it."""
        if isinstance(error, MessageError):
            return RetryDecision("fail", 0.0, f"{error.kind}: {error.message}")
        if isinstance(error, ConnectorError):
            return RetryDecision("pause", self.probe_base, f"{error.kind}: {error.message}")
        retry_after = error.retry_after if isinstance(error, DeliveryError) else None
        delay = retry_after if retry_after is not None else self.backoff(attempts)
        label = f"{error.kind}: {error.message}" if isinstance(error, DeliveryError) else f"{type(error).__name__}"
        if now + timedelta(seconds=delay) >= expires_at:
            return RetryDecision(
                "fail", 0.0, f"queue lifetime ({self.lifetime}) would pass before the next attempt; {label}"
            )
        source = "Retry-After" if retry_after is not None else "backoff"
        return RetryDecision("retry", delay, f"{label}; next attempt in {delay:.3g} s ({source})")
