"""Probing, for the dispatcher: when a connector's setup is wrong (it is paused) or Graph or the token
service is down (an outage), one message — or, with none, a token request — tests whether the cause is
gone, instead of every message testing it on its own backoff.

* paused → its mail stays queued; when the probe is due, one message tests whether the admin has fixed
  it, and success resumes the connector;
* outage → after ``OUTAGE_AFTER`` consecutive failures that say "Graph or the token service is down", the
  connector claims nothing new; every ``OUTAGE_PROBE_SECONDS`` one waiting message is taken before its
  backoff is over, and the first that goes through makes every message that backed off during the outage
  due again at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ..auth.tokens import TokenProvider
from ..clock import Clock
from ..connectors import ConnectorConfig, ConnectorStore
from ..errors import (
    ConnectorError,
    ConsentMissingError,
    DeliveryError,
    NetworkError,
    PermissionMissingError,
    ServiceUnavailableError,
    StoreError,
    TokenServiceError,
)
from ..graph import GraphSender
from ..outbox import Claimed, Outbox
from .retry import RetryPolicy

log = logging.getLogger("m365relay.dispatch")
T = TypeVar("T")

OUTAGE_AFTER = 3  # consecutive failures of Graph or the token service that make an outage ...
OUTAGE_PROBE_SECONDS = 2.0  # ... during which one message per connector tests, this often, whether it is over
OUTAGE_ERRORS = (ServiceUnavailableError, NetworkError, TokenServiceError)


@dataclass
class _Lane:
    blocked_until: datetime | None = None  # Graph or the token service said "wait": nothing is sent
    no_claims_until: datetime | None = None  # the budget is spent: nothing more is claimed
    probing: bool = False
    held: int = 0  # claimed by this process and not finished
    paused: bool = False
    failures: int = 0  # consecutive outage-like failures (OUTAGE_ERRORS) since the last send
    outage_probe_at: float | None = None  # monotonic; set while Graph or the token service seems down


class Probing:
    """The probing half of ``Dispatcher`` (which supplies the attributes and helpers declared here)."""

    outbox: Outbox
    connectors: ConnectorStore
    sender: GraphSender
    tokens: TokenProvider
    policy: RetryPolicy
    clock: Clock
    owner: str
    lease_seconds: float
    _tasks: dict[asyncio.Task[None], Claimed | None]
    _wake: asyncio.Event
    _connectors_at: float

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        raise NotImplementedError

    async def _record(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        raise NotImplementedError

    def _spawn(self, coroutine: Coroutine[Any, Any, None], message: Claimed | None) -> None:
        raise NotImplementedError

    async def _attempt(self, connector: ConnectorConfig, lane: _Lane, message: Claimed, *, probe: bool) -> bool | None:
        raise NotImplementedError

    async def _pause(self, connector: ConnectorConfig, error: ConnectorError, *, probe: bool) -> None:
        attempts = connector.probe_attempts + 1 if probe else 1
        next_probe = self.clock.now() + timedelta(seconds=self.policy.probe_delay(attempts))
        if isinstance(error, ConsentMissingError | PermissionMissingError):
            self.tokens.invalidate(connector.id)  # the next token must be fresh to show new consent
        await self._db(self.connectors.pause, connector.id, error, next_probe, attempts)
        self._connectors_at = -1e9  # re-read connector states next turn
        if not probe:
            log.warning("connector %s paused: %s — %s", connector.name, error.message, error.remedy)

    # -- outages of Graph or the token service -------------------------------------------------------

    def _note_outage(self, connector: ConnectorConfig, lane: _Lane, exc: Exception) -> None:
        """Several sends in a row met an outage: stop claiming, let one message at a time find its end."""
        if not isinstance(exc, OUTAGE_ERRORS):
            return
        lane.failures += 1
        if lane.failures >= OUTAGE_AFTER and lane.outage_probe_at is None:
            log.warning("connector %s: Graph or the token service seems down; probing every %.0f s",
                        connector.name, OUTAGE_PROBE_SECONDS)  # fmt: skip
            lane.outage_probe_at = self.clock.monotonic() + OUTAGE_PROBE_SECONDS
        elif lane.outage_probe_at is not None:
            lane.outage_probe_at = self.clock.monotonic() + OUTAGE_PROBE_SECONDS

    async def _outage_over(self, connector: ConnectorConfig, lane: _Lane) -> None:
        """A send went through: if an outage was on, the mail that backed off during it is due again now,
        rather than each message on its own backoff (which can be minutes after the outage ended)."""
        lane.failures = 0
        if lane.outage_probe_at is None:
            return
        lane.outage_probe_at = None
        count = await self._record(self.outbox.due_again, connector.id, [e.__name__ for e in OUTAGE_ERRORS])
        log.info("connector %s works again; %d waiting message(s) are due now", connector.name, count)
        self._wake.set()

    def _outage_probe(self, connector: ConnectorConfig, lane: _Lane) -> bool:
        if lane.probing or lane.outage_probe_at is None or self.clock.monotonic() < lane.outage_probe_at:
            return False
        lane.probing = True
        lane.outage_probe_at = self.clock.monotonic() + OUTAGE_PROBE_SECONDS
        self._spawn(self._send_probe(connector, lane), None)
        return True

    async def _send_probe(self, connector: ConnectorConfig, lane: _Lane) -> None:
        """One message, taken before its backoff is over, tests whether the outage has ended."""
        try:
            claimed = await self._db(self.outbox.claim, self.owner, connector.id, 1, self.lease_seconds, early=True)
            if not claimed:  # nothing waits: nothing to recover; new mail finds out for itself
                lane.outage_probe_at, lane.failures = None, 0
                return
            task = asyncio.current_task()
            if task is not None:
                self._tasks[task] = claimed[0]  # its lease is renewed like any delivery's
            lane.held += 1
            try:
                await self._attempt(connector, lane, claimed[0], probe=False)
            finally:
                lane.held -= 1
        except StoreError as exc:
            log.warning("connector %s: outage probe not made: %s", connector.name, exc.message)
        finally:
            lane.probing = False

    # -- probing a paused connector ----------------------------------------------------------------

    async def _probe(self, connector: ConnectorConfig, lane: _Lane) -> None:
        try:
            self.tokens.invalidate(connector.id)
            claimed = await self._db(self.outbox.claim, self.owner, connector.id, 1, self.lease_seconds)
            if claimed:
                # Registered like any delivery, so its lease is renewed while a long send runs.
                task = asyncio.current_task()
                if task is not None:
                    self._tasks[task] = claimed[0]
                lane.held += 1
                try:
                    works = await self._attempt(connector, lane, claimed[0], probe=True)
                finally:
                    lane.held -= 1
            else:
                works = await self._token_probe(connector)
            if works is None:  # the probe could not tell (its message waits for budget): ask again later
                next_probe = self.clock.now() + timedelta(seconds=self.policy.probe_base)
                await self._db(self.connectors.set_next_probe, connector.id, next_probe)
                self._connectors_at = -1e9
            elif works:
                lane.paused = False
                if await self._db(self.connectors.resume, connector.id):
                    log.info("connector %s works again; sending resumes", connector.name)
                self._connectors_at = -1e9
        finally:
            lane.probing = False

    async def _token_probe(self, connector: ConnectorConfig) -> bool:
        try:
            await self.sender.check_token(connector)
        except ConnectorError as exc:
            await self._pause(connector, exc, probe=True)
            return False
        except DeliveryError:
            # A temporary failure says nothing about the setup: probe again after the base delay.
            next_probe = self.clock.now() + timedelta(seconds=self.policy.probe_base)
            await self._db(self.connectors.set_next_probe, connector.id, next_probe)
            self._connectors_at = -1e9
            return False
        return True
