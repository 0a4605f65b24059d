"""The dispatcher: takes due messages from the outbox and hands them to Graph, within the limits.

One loop per process (``m365relay worker``, or inside ``serve``). Each turn it looks at every connector:

* active → take free in-flight slots (4 per connector by default, shared across processes on
  PostgreSQL), claim that many due messages, send each in its own task;
* throttled (429 with Retry-After) → nothing is claimed for that connector until the time has passed;
* paused (its setup is wrong) → its mail stays queued; when the probe is due, one message (or, with
  none queued, a token request) tests whether the admin has fixed it, and success resumes the connector.

Outcomes go back to the outbox through the retry policy. Leases are renewed while sends run; on
shutdown, in-flight sends get a grace period and whatever is still running is released, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..auth.tokens import TokenProvider
from ..clock import Clock, SystemClock
from ..connectors import ConnectorConfig, ConnectorStore
from ..errors import (
    ConnectorError,
    ConsentMissingError,
    DeliveryError,
    MessageError,
    PermissionMissingError,
    ThrottledError,
    TokenServiceError,
)
from ..graph import GraphSender, OutgoingMessage
from ..metrics import Metrics
from ..outbox import Claimed, Outbox
from .budget import Budgets
from .gate import Gate, LocalGate
from .retry import RetryPolicy

log = logging.getLogger("m365relay.dispatch")

CONNECTOR_REFRESH_SECONDS = 1.0
EXPIRE_EVERY_SECONDS = 60.0


@dataclass
class DispatchStats:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    released: int = 0
    in_flight: int = 0
    paused: set[str] = field(default_factory=set)


@dataclass
class _Lane:
    blocked_until: datetime | None = None
    probing: bool = False


class Dispatcher:
    def __init__(
        self,
        *,
        outbox: Outbox,
        connectors: ConnectorStore,
        sender: GraphSender,
        tokens: TokenProvider,
        policy: RetryPolicy,
        gate: Gate | None = None,
        budgets: Budgets | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        lease_seconds: float = 120.0,
        poll_interval: float = 0.5,
        concurrency: int = 64,
        shutdown_grace: float = 30.0,
        owner: str | None = None,
    ) -> None:
        self.outbox = outbox
        self.connectors = connectors
        self.sender = sender
        self.tokens = tokens
        self.policy = policy
        self.gate: Gate = gate or LocalGate(4)
        self.budgets = budgets
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = DispatchStats()
        self._lanes: dict[int, _Lane] = {}
        self._tasks: dict[asyncio.Task[None], Claimed | None] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connectors: list[ConnectorConfig] = []
        self._connectors_at = -1e9
        self._expired_at = -1e9
        self._renewed_at = 0.0

    # -- control -----------------------------------------------------------------------------------

    def wake(self, _message_id: int | None = None) -> None:
        """Ask the loop to look for work now (safe from any thread; the outbox calls it on enqueue)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.outbox.listeners.append(self.wake)
        log.info("dispatcher %s started", self.owner)
        try:
            while not stop.is_set():
                busy = await self.turn()
                if not busy:
                    await self._idle(stop)
        finally:
            self.outbox.listeners.remove(self.wake)
            await self._drain()
            log.info("dispatcher %s stopped", self.owner)

    async def run_until_idle(self) -> None:
        """Work until nothing is due or in flight (tests, benchmarks). Bound it with ``asyncio.timeout``."""
        self._loop = asyncio.get_running_loop()
        while True:
            busy = await self.turn()
            if self._tasks:
                await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED, timeout=self.poll_interval)
            elif not busy:
                return

    # -- one turn --------------------------------------------------------------------------------

    async def turn(self) -> bool:
        """Claim and start whatever is due. Returns whether anything was started."""
        monotonic = self.clock.monotonic()
        if monotonic - self._expired_at >= EXPIRE_EVERY_SECONDS:
            self._expired_at = monotonic
            expired = await asyncio.to_thread(self.outbox.expire)
            self.stats.failed += len(expired)
        if monotonic - self._renewed_at >= self.lease_seconds / 3:
            self._renewed_at = monotonic
            await self._renew()
        if monotonic - self._connectors_at >= CONNECTOR_REFRESH_SECONDS:
            self._connectors = await asyncio.to_thread(self.connectors.all)
            self._connectors_at = monotonic
        started = False
        now = self.clock.now()
        for connector in self._connectors:
            lane = self._lanes.setdefault(connector.id, _Lane())
            if connector.paused:
                self.stats.paused.add(connector.name)
                if not lane.probing and (connector.next_probe_at is None or connector.next_probe_at <= now):
                    lane.probing = True
                    self._spawn(self._probe(connector, lane), None)
                    started = True
                continue
            self.stats.paused.discard(connector.name)
            if lane.blocked_until is not None and lane.blocked_until > now:
                continue
            started |= await self._start_sends(connector, lane)
        return started

    async def _start_sends(self, connector: ConnectorConfig, lane: _Lane) -> bool:
        room = self.concurrency - len(self._tasks)
        wanted = min(room, self.gate.capacity - self.gate.in_flight(connector.id))
        if wanted <= 0:
            return False
        slots = await asyncio.to_thread(self.gate.take, connector.id, wanted)
        if not slots:
            return False
        claimed = await asyncio.to_thread(self.outbox.claim, self.owner, connector.id, len(slots), self.lease_seconds)
        unused = slots[len(claimed) :]
        if unused:
            await asyncio.to_thread(self.gate.give, connector.id, unused)
        for message, slot in zip(claimed, slots, strict=False):
            self._spawn(self._deliver(connector, lane, message, slot), message)
        return bool(claimed)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], message: Claimed | None) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks[task] = message
        self.stats.in_flight = sum(1 for m in self._tasks.values() if m is not None)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self.stats.in_flight = sum(1 for m in self._tasks.values() if m is not None)
        if not task.cancelled() and task.exception() is not None:
            log.error("dispatcher task failed: %r", task.exception())
        self._wake.set()

    # -- sending one message ---------------------------------------------------------------------

    async def _deliver(self, connector: ConnectorConfig, lane: _Lane, message: Claimed, slot: int | None) -> None:
        try:
            await self._attempt(connector, lane, message, probe=False)
        finally:
            if slot is not None:
                await asyncio.to_thread(self.gate.give, connector.id, [slot])

    async def _attempt(self, connector: ConnectorConfig, lane: _Lane, message: Claimed, *, probe: bool) -> bool:
        """One attempt. Returns whether the connector proved to work (the message went, or failed on its own)."""
        if self.budgets is not None:
            wait = await asyncio.to_thread(self.budgets.reserve, connector.id, message.recipient_count)
            if wait is not None:
                await self._hold_for_budget(connector, lane, message, wait)
                return True
        body = await asyncio.to_thread(self.outbox.open_body, message.id)
        try:
            outgoing = OutgoingMessage.from_stream(body)
            result = await self.sender.send(
                connector, outgoing, envelope=list(message.recipients), save_to_sent_items=message.save_to_sent_items
            )
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self.outbox.release, message.id, self.owner, "worker shut down"))
            self.stats.released += 1
            raise
        except Exception as exc:  # every failure is routed through the retry policy
            return await self._failed(connector, lane, message, exc, probe=probe)
        finally:
            body.close()
        await asyncio.to_thread(self.outbox.mark_sent, message.id, self.owner, result.request_id, result.notes)
        self.stats.sent += 1
        self._count("sent")
        return True

    async def _failed(
        self, connector: ConnectorConfig, lane: _Lane, message: Claimed, exc: Exception, *, probe: bool
    ) -> bool:
        now = self.clock.now()
        decision = self.policy.decide(exc, attempts=message.attempts, created_at=message.created_at, now=now)
        error = exc if isinstance(exc, DeliveryError) else None
        if error is None:
            log.exception("unexpected error sending message %s", message.id, exc_info=exc)
        if decision.action == "fail":
            await asyncio.to_thread(self.outbox.fail, message.id, self.owner, error, decision.reason)
            self.stats.failed += 1
            self._count("failed")
            return isinstance(exc, MessageError)
        if decision.action == "pause":
            assert isinstance(exc, ConnectorError)
            await self._pause(connector, exc, probe=probe)
            await asyncio.to_thread(self.outbox.release, message.id, self.owner, f"connector paused: {decision.reason}")
            self.stats.released += 1
            return False
        until = now + timedelta(seconds=decision.delay)
        await asyncio.to_thread(self.outbox.defer, message.id, self.owner, error, until, decision.reason)
        self.stats.deferred += 1
        if self.metrics is not None:
            self.metrics.deferrals.labels(error.kind if error else "unexpected").inc()
        if isinstance(exc, ThrottledError | TokenServiceError) and decision.delay > 0:
            # The mailbox (or the token service) asked everyone to wait, not just this message.
            lane.blocked_until = max(lane.blocked_until or now, until)
        return not isinstance(exc, TokenServiceError)

    async def _hold_for_budget(self, connector: ConnectorConfig, lane: _Lane, message: Claimed, wait: float) -> None:
        now = self.clock.now()
        until = now + timedelta(seconds=wait)
        reason = f"sending budget of the mailbox used up; next attempt in {wait:.0f} s"
        await asyncio.to_thread(
            functools.partial(self.outbox.defer, message.id, self.owner, None, until, reason, uncount=True)
        )
        lane.blocked_until = max(lane.blocked_until or now, until)
        self.stats.deferred += 1
        if self.metrics is not None:
            self.metrics.deferrals.labels("budget").inc()

    async def _pause(self, connector: ConnectorConfig, error: ConnectorError, *, probe: bool) -> None:
        attempts = connector.probe_attempts + 1 if probe else 1
        next_probe = self.clock.now() + timedelta(seconds=self.policy.probe_delay(attempts))
        if isinstance(error, ConsentMissingError | PermissionMissingError):
            self.tokens.invalidate(connector.id)  # the next token must be fresh to show new consent
        await asyncio.to_thread(self.connectors.pause, connector.id, error, next_probe, attempts)
        self._connectors_at = -1e9  # re-read connector states next turn
        if not probe:
            log.warning("connector %s paused: %s — %s", connector.name, error.message, error.remedy)

    # -- probing a paused connector ----------------------------------------------------------------

    async def _probe(self, connector: ConnectorConfig, lane: _Lane) -> None:
        try:
            self.tokens.invalidate(connector.id)
            claimed = await asyncio.to_thread(self.outbox.claim, self.owner, connector.id, 1, self.lease_seconds)
            if claimed:
                works = await self._attempt(connector, lane, claimed[0], probe=True)
            else:
                works = await self._token_probe(connector)
            if works:
                if await asyncio.to_thread(self.connectors.resume, connector.id):
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
            await self._pause_retry_soon(connector)
            return False
        return True

    async def _pause_retry_soon(self, connector: ConnectorConfig) -> None:
        """A temporary failure during a probe says nothing about the setup: probe again after the base delay."""
        next_probe = self.clock.now() + timedelta(seconds=self.policy.probe_base)
        await asyncio.to_thread(self.connectors.set_next_probe, connector.id, next_probe)
        self._connectors_at = -1e9

    # -- housekeeping ----------------------------------------------------------------------------

    async def _renew(self) -> None:
        ids = [m.id for m in self._tasks.values() if m is not None]
        if ids:
            await asyncio.to_thread(self.outbox.renew_leases, self.owner, ids, self.lease_seconds)
        await asyncio.to_thread(self.gate.renew)

    async def _idle(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        sleeper = asyncio.ensure_future(self.clock.sleep(self.poll_interval))
        try:
            await asyncio.wait([*waiters, sleeper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (*waiters, sleeper):
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future

    async def _drain(self) -> None:
        """Let in-flight sends finish for the grace period; release the rest for another worker."""
        if not self._tasks:
            return
        log.info("waiting up to %.0f s for %d in-flight sends", self.shutdown_grace, len(self._tasks))
        _, pending = await asyncio.wait(list(self._tasks), timeout=self.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)

    def _count(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.messages_finished.labels(status).inc()
