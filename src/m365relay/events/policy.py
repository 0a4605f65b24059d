"""When to try a webhook delivery again — a policy object that returns a decision (STYLE.md §4), tested
with a fixed clock. Exponential backoff from ``base`` doubling to ``maximum``, with ±20 % jitter so that the
deliveries of a receiver that comes back do not all arrive in one second; given up once the next attempt
would fall beyond ``max_age`` after the event (three days by default, as issue 16 asks)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class WebhookRetryPolicy:
    base: float = 5.0
    maximum: float = 21_600.0
    max_age: timedelta = timedelta(days=3)
    disable_after: timedelta = timedelta(days=3)
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempts: int) -> float:
        raw = min(self.maximum, self.base * 2.0 ** max(0, attempts - 1))
        return raw * (1.0 + self.jitter * (2.0 * self.rng.random() - 1.0))

    def next_attempt(self, attempts: int, created_at: datetime, now: datetime) -> datetime | None:
        """When to try again after the ``attempts``-th failure, or None: give up."""
        when = now + timedelta(seconds=self.delay(attempts))
        if when - created_at > self.max_age:
            return None
        return when

    def should_disable(self, failing_since: datetime | None, now: datetime) -> bool:
        return failing_since is not None and now - failing_since >= self.disable_after
