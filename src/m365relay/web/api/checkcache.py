"""What keeps ``/connectors/{id}/checks`` from becoming a way to hammer Entra ID: each run asks Microsoft
for a fresh token, and a read-only key could otherwise trigger 50 a second (the app registration is then
throttled, AADSTS50196, and real mail waits).

* ``GET`` results are kept for ``ttl`` seconds per connector and configuration version: a new secret or any
  edit gives a fresh run at once, repeated polling does not.
* One run at a time per connector: parallel requests wait for the run in progress and share its result.
* Fresh runs (``GET`` misses and every ``POST``) are limited per connector — ``RUNS_PER_MINUTE`` on average,
  bursts of ``BURST`` — and a refused request learns when to retry (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from ...clock import Clock
from ...connectors import ConnectorConfig
from ..ratelimit import RateLimiter

T = TypeVar("T")
TTL_SECONDS = 30.0
RUNS_PER_MINUTE = 6
BURST = 3


class RunRefused(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class CheckCache(Generic[T]):
    def __init__(self, clock: Clock, ttl: float = TTL_SECONDS) -> None:
        self.clock = clock
        self.ttl = ttl
        self.limiter = RateLimiter(RUNS_PER_MINUTE / 60, BURST, clock=clock)
        self._results: dict[int, tuple[tuple[object, ...], float, T]] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    @staticmethod
    def version(connector: ConnectorConfig) -> tuple[object, ...]:
        credential = connector.credential
        return (connector.config_version, credential.id if credential else None, connector.consent_granted_at)

    async def get(self, connector: ConnectorConfig, run: Callable[[], Awaitable[T]]) -> T:
        """The cached result for this connector's current configuration, or a fresh ``run()``."""
        lock = self._locks.setdefault(connector.id, asyncio.Lock())
        async with lock:
            cached = self._results.get(connector.id)
            version = self.version(connector)
            if cached is not None and cached[0] == version and self.clock.monotonic() - cached[1] < self.ttl:
                return cached[2]
            result = await self.fresh(connector, run)
            self._results[connector.id] = (version, self.clock.monotonic(), result)
            return result

    async def fresh(self, connector: ConnectorConfig, run: Callable[[], Awaitable[T]]) -> T:
        """``run()`` if the connector's run budget allows it, else ``RunRefused``."""
        wait = self.limiter.acquire(connector.id)
        if wait is not None:
            raise RunRefused(wait)
        return await run()
