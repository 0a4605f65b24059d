"""Per-API-key token buckets: ``rate`` requests per second on average, bursts of ``burst`` at once.

The buckets live in the process (each ``serve`` process limits on its own: N processes behind a load
balancer allow N times the rate). A refused request learns how long to wait — the ``Retry-After`` of the
429 answer (RFC 9110 §10.2.3, whole seconds, rounded up so that retrying then succeeds).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from ..clock import Clock, SystemClock

MAX_BUCKETS = 100_000  # keys are few; this only bounds memory if something hashes many identities here


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else 2 * rate
        self.clock = clock or SystemClock()
        self._buckets: dict[object, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, identity: object, cost: float = 1.0) -> float | None:
        """Take ``cost`` tokens for ``identity``. None: go ahead. A number: refused, retry after that many
        seconds (nothing was taken)."""
        now = self.clock.monotonic()
        with self._lock:
            bucket = self._buckets.get(identity)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._buckets.clear()
                bucket = self._buckets[identity] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return None
            return (cost - bucket.tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
