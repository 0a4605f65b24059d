"""The dispatcher: takes due messages from the outbox and hands them to Graph, within the limits.

One loop per process (``m365relay worker``, or inside ``serve``). Each turn it looks at every connector:

* active → keep a small number of its due messages claimed ahead (twice its in-flight limit), each in
  its own task that loads the body and spends budget *before* taking an in-flight slot, holds the slot
  only for the Graph request, and records the outcome *after* giving the slot back — so the slots, which
  are what Microsoft limits, never wait for the database;
* throttled (429 with Retry-After) → nothing is sent for that connector until the time has passed;
* paused (its setup is wrong) → its mail stays queued; when the probe is due, one message (or, with
  none queued, a token request) tests whether the admin has fixed it, and success resumes the connector;
* in an outage (Graph or the token service down) → one message at a time tests whether it is over, and
  its success makes the mail that backed off meanwhile due again (probing.py).

Outcomes go back to the outbox through the retry policy; database trouble is never one of them (the
message goes back uncounted). Leases are renewed while messages are held, and the leases of workers
known to be dead are taken back at once (liveness.py); on shutdown, in-flight sends get a grace period
and everything else is released, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from ..auth.tokens import TokenProvider
from ..clock import Clock, SystemClock
from ..connectors import ConnectorConfig, ConnectorStore
from ..errors import (
    ConnectorError,
    DeliveryError,
    MessageError,
    PermissionNeededError,
    SendInDoubtError,
    StoreError,
    ThrottledError,
    TokenServiceError,
)
from ..graph import GraphSender, OutgoingMessage
from ..graph.sender import PreparedSend, SendResult
from ..mailbox.reconcile import Reconciler
from ..mailbox.sent_items import SentItems
from ..metrics import Metrics
from ..outbox import FINAL, Claimed, Outbox
from ..outbox.doubt import Doubts
from .budget import Budgets
from .gate import LocalGate
from .indoubt import InDoubt
from .liveness import Liveness
from .mailboxes import Hold, MailboxHolds, label, mailbox_of, missing_mailbox
from .probing import Probing, _Lane
from .retry import RetryPolicy

if TYPE_CHECKING:
    from ..lifecycle import ExpiryWatch

log = logging.getLogger("m365relay.dispatch")
T = TypeVar("T")

CONNECTOR_REFRESH_SECONDS = 1.0
EXPIRE_EVERY_SECONDS = 60.0
PURGE_EVERY_SECONDS = 3600.0  # finished mail past the retention period is deleted hourly ...
PURGE_BATCH = 500  # ... a batch per transaction, so that ingress never waits long for the write lock
LONG_WAIT_SECONDS = 5.0  # a claimed message facing a longer throttle goes back to the outbox instead
STORE_PAUSE_SECONDS = 1.0  # after a database error, a connector's claims wait this long
LIVENESS_SWEEP_SECONDS = 1.0  # how often the leases of dead workers are looked for (liveness.py)


@dataclass
class DispatchStats:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    released: int = 0
    in_flight: int = 0
    slot_seconds: float = 0.0  # time requests spent on the wire: utilisation = this / (slots × time)
    paused: set[str] = field(default_factory=set)


class Dispatcher(Probing, InDoubt):
    def __init__(
        self,
        *,
        outbox: Outbox,
        connectors: ConnectorStore,
        sender: GraphSender,
        tokens: TokenProvider,
        policy: RetryPolicy,
        gate: LocalGate | None = None,
        budgets: Budgets | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        lease_seconds: float = 120.0,
        poll_interval: float = 0.5,
        concurrency: int = 64,
        shutdown_grace: float = 30.0,
        owner: str | None = None,
        expiry_watch: ExpiryWatch | None = None,
        retention: timedelta | None = None,
        liveness: Liveness | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.outbox = outbox
        self.connectors = connectors
        self.sender = sender
        self.tokens = tokens
        self.policy = policy
        self.gate = gate or LocalGate(4)
        self.budgets = budgets
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.expiry_watch = expiry_watch  # credential expiry: checked on start, then daily (lifecycle/)
        self.retention = retention  # None: finished mail is kept until someone purges it
        self.liveness = liveness or Liveness()  # tells dead lease owners from live ones (liveness.py)
        # In-doubt sends are looked up in Sent Items before any resend (mailbox/reconcile.py, outbox/doubt.py).
        self.reconciler = reconciler or Reconciler(SentItems(sender))
        self.doubts = Doubts(outbox)
        self.stats = DispatchStats()
        # Tasks that live as long as the dispatcher (bounce intake, mailbox/inbox.py): run(stop) coroutines.
        self.companions: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = []
        self._lanes: dict[int, _Lane] = {}
        self.holds = MailboxHolds()  # throttled, over budget or missing mailboxes (mailboxes.py)
        self._tasks: dict[asyncio.Task[None], Claimed | None] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(8, concurrency), thread_name_prefix="m365relay-db")
        self._connectors: list[ConnectorConfig] = []
        self._connectors_at = -1e9
        self._expired_at = -1e9
        self._purged_at = -1e9
        self._renewed_at = 0.0
        self._swept_at = -1e9
        self._stopping = False

    @property
    def prefetch(self) -> int:
        return 2 * self.gate.capacity

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
        companions = [asyncio.create_task(run(stop)) for run in self.companions]
        try:
            await self.liveness.start(self.owner)
        except OSError as exc:  # e.g. a read-only directory: leases still expire, only later
            log.warning("worker liveness not shown (%s); a crash of this worker is noticed when leases expire", exc)
        try:
            failures = 0
            while not stop.is_set():
                try:
                    busy = await self.turn()
                    failures = 0
                except StoreError as exc:  # the database is briefly unavailable: keep going, nothing is lost
                    log.warning("dispatcher: %s; retrying", exc.message)
                    busy = False
                except Exception:  # a bug or a surprise must not stop sending for good while ingress accepts
                    failures += 1
                    log.exception("dispatcher: unexpected error in a turn (%d in a row); carrying on", failures)
                    await self.clock.sleep(min(30.0, self.poll_interval * 2**failures))
                    busy = False
                if not busy:
                    await self._idle(stop)
        finally:
            self.outbox.listeners.remove(self.wake)
            await asyncio.gather(*companions, return_exceptions=True)
            await self._drain()
            if self.budgets is not None:
                try:  # unspent budget goes back for the other processes
                    await self._db(self.budgets.release)
                except Exception as exc:  # kept counted: errs on the safe side, and the rest must still close
                    log.warning("dispatcher: unspent budget not given back: %s", exc)
            await self.gate.aclose()
            await self.liveness.aclose()
            self._pool.shutdown(wait=False)
            log.info("dispatcher %s stopped", self.owner)

    async def run_until_idle(self) -> None:
        """Work until nothing is due or held (tests, benchmarks). Bound it with ``asyncio.timeout``."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                busy = await self.turn()
                if self._tasks:
                    await asyncio.wait(
                        list(self._tasks), return_when=asyncio.FIRST_COMPLETED, timeout=self.poll_interval
                    )
                elif not busy:
                    return
        finally:
            await self.gate.aclose()  # its connections reopen on the next use

    # -- one turn --------------------------------------------------------------------------------

    async def turn(self) -> bool:
        """Claim and start whatever is due. Returns whether anything was started."""
        await self._housekeeping()
        started = False
        now = self.clock.now()
        for connector in self._connectors:
            lane = self._lanes.setdefault(connector.id, _Lane())
            lane.paused = connector.paused
            if connector.paused:
                self.stats.paused.add(connector.name)
                if not lane.probing and (connector.next_probe_at is None or connector.next_probe_at <= now):
                    lane.probing = True
                    self._spawn(self._probe(connector, lane), None)
                    started = True
                continue
            self.stats.paused.discard(connector.name)
            if any(t is not None and t > now for t in (lane.blocked_until, lane.no_claims_until)):
                continue
            if self.holds.all_held(connector, now):
                continue
            if lane.outage_probe_at is not None:
                started |= self._outage_probe(connector, lane)
                continue
            started |= await self._claim(connector, lane)
        return started

    async def _housekeeping(self) -> None:
        monotonic = self.clock.monotonic()
        if self.expiry_watch is not None and self.expiry_watch.due():
            self._spawn(self.expiry_watch.run_quietly(), None)
        if monotonic - self._expired_at >= EXPIRE_EVERY_SECONDS:
            self._expired_at = monotonic
            self.stats.failed += len(await self._db(self.outbox.expire))
        if self.retention is not None and monotonic - self._purged_at >= PURGE_EVERY_SECONDS:
            self._purged_at = monotonic
            self._spawn(self._purge(self.retention), None)
        if monotonic - self._renewed_at >= self.lease_seconds / 3:
            self._renewed_at = monotonic
            ids = [m.id for m in self._tasks.values() if m is not None]
            if ids:
                await self._db(self.outbox.renew_leases, self.owner, ids, self.lease_seconds)
        if monotonic - self._swept_at >= LIVENESS_SWEEP_SECONDS:
            self._swept_at = monotonic
            await self._reclaim_dead()
        if monotonic - self._connectors_at >= CONNECTOR_REFRESH_SECONDS:
            self._connectors = await self._db(self.connectors.all)
            self._connectors_at = monotonic

    async def _reclaim_dead(self) -> None:
        """Give back, now, the leases of workers known to be dead (a SIGKILL, a crash), instead of waiting
        for them to run out."""
        owners = await self._db(self.outbox.lease_owners, besides=self.owner)
        dead = await self.liveness.dead(owners) if owners else set()
        if dead:
            why = "its worker is gone (its liveness lock is free); the message is due again"
            count = await self._db(self.outbox.expire_leases, dead, why)
            log.warning("took back %d message(s) from dead worker(s) %s", count, ", ".join(sorted(dead)))

    async def _purge(self, retention: timedelta) -> None:
        """Delete finished mail older than the retention period, a batch at a time (a background task)."""
        total = 0
        try:
            while not self._stopping:
                count = await self._db(self.outbox.purge, FINAL, retention, limit=PURGE_BATCH)
                total += count
                if count < PURGE_BATCH:
                    break
                await asyncio.sleep(0)  # let sends and claims between batches
        except Exception as exc:  # the next hour tries again; sending goes on either way
            log.warning("dispatcher: purging finished mail failed: %s", exc)
        if total:
            log.info("purged %d finished message(s) older than %d days", total, retention.days)

    async def _claim(self, connector: ConnectorConfig, lane: _Lane) -> bool:
        room = self.concurrency - sum(1 for m in self._tasks.values() if m is not None)
        mailboxes = len(connector.known_mailboxes) + any(e.startswith("@") for e in connector.send_as)
        wanted = min(room, self.prefetch * mailboxes - lane.held)  # each mailbox has its own slots
        if wanted <= 0 or self._stopping:
            return False
        claimed = await self._db(self.outbox.claim, self.owner, connector.id, wanted, self.lease_seconds)
        for message in claimed:
            lane.held += 1
            self._spawn(self._deliver(connector, lane, message), message)
        return bool(claimed)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], message: Claimed | None) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks[task] = message
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("dispatcher task failed: %r", task.exception())
        self._wake.set()

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Blocking database work on the dispatcher's own threads (never the event loop's)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _record(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Record an outcome, insisting: a sent message whose "sent" is lost would be sent again when its
        lease runs out, so a failed write is retried for as long as the lease leaves room."""
        delay, waited = 0.1, 0.0
        while True:
            try:
                return await self._db(fn, *args, **kwargs)
            except StoreError as exc:
                if waited + delay > self.lease_seconds / 2:
                    raise
                log.warning("recording an outcome failed (%s); retrying in %.1f s", exc.message, delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)

    # -- sending one message ---------------------------------------------------------------------

    async def _deliver(self, connector: ConnectorConfig, lane: _Lane, message: Claimed) -> None:
        try:
            await self._attempt(connector, lane, message, probe=False)
        finally:
            lane.held -= 1

    async def _attempt(self, connector: ConnectorConfig, lane: _Lane, message: Claimed, *, probe: bool) -> bool | None:
        """One attempt. Returns whether the connector proved to work (the message went, or failed on its own),
        or None when nothing was tried (a probe's message held back for budget, or the database away)."""
        if message.doubt_since is not None:
            handled, outcome = await self._reconcile(connector, lane, message, probe=probe)
            if handled:
                return outcome
        body: BinaryIO | None = None
        sending = False
        mailbox = mailbox_of(connector, message.header_from)
        try:
            if await self._held_back(connector, mailbox, message):
                return None if probe else True
            body = await self._body(message)
            prepared = await self.sender.prepare(
                connector, await self._with_message_id(connector, message, OutgoingMessage.from_stream(body)),
                envelope=list(message.recipients), save_to_sent_items=message.save_to_sent_items, mailbox=mailbox,
            )  # fmt: skip
            prepared.on_draft = functools.partial(self._note_draft, message)
            async with self.gate.slot(connector.id, mailbox):
                hold = self.holds.current(connector.id, mailbox, self.clock.now())  # a 429 that came meanwhile
                if (reason := await self._must_wait(lane, probe, hold)) is not None:
                    await self._give_back(message, reason)
                    return True
                sending = True
                result = await self._send(prepared)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancelled(message, sending=sending))
            raise
        except SendInDoubtError as exc:  # the request went out and no answer came: not a clean failure
            await self._record_doubt(message, exc)
            return True
        except StoreError as exc:  # the database, not the message or Graph: nothing was sent
            await self._store_trouble(lane, message, exc)
            return None
        except Exception as exc:  # every failure is routed through the retry policy
            return await self._failed(connector, lane, message, exc, probe=probe, mailbox=mailbox)
        finally:
            if body is not None:
                body.close()
        await self._record(self.outbox.mark_sent, message.id, self.owner, result.request_id, result.notes)
        self.stats.sent += 1
        self._count("sent")
        await self._outage_over(connector, lane)
        if result.method == "upload":  # a large message went: Mail.ReadWrite is there (if it was missing)
            await self._record(self.connectors.clear_need, connector.id, "PermissionNeededError")
        return True

    async def _held_back(self, connector: ConnectorConfig, mailbox: str, message: Claimed) -> bool:
        """Whether the mailbox's hold (a 429, a missing mailbox) or its spent budget keeps the message back;
        it is then deferred or held, without counting an attempt."""
        if (hold := self.holds.current(connector.id, mailbox, self.clock.now())) is not None:
            await self._db(self.outbox.defer, message.id, self.owner, hold.error, hold.until, hold.reason, uncount=True)
            self.stats.deferred += 1
            return True
        if self.budgets is not None:
            wait = await self._db(self.budgets.reserve, connector.id, message.recipient_count, 1, mailbox)
            if wait is not None:
                await self._hold(
                    connector, mailbox, message, wait, f"sending budget of mailbox {label(connector, mailbox)} used up"
                )
                return True
        return False

    async def _cancelled(self, message: Claimed, *, sending: bool) -> None:
        """Shutdown cut an attempt short: cut off while the request was on the wire, it may have gone (in
        doubt); before that, the message simply goes back."""
        if sending:
            await self._record_doubt(message, None)
        else:
            await self._db(self.outbox.release, message.id, self.owner, "worker shut down")
        self.stats.released += 1

    async def _body(self, message: Claimed) -> BinaryIO:
        if message.body is not None:
            return io.BytesIO(message.body)
        return await self._db(self.outbox.open_body, message.id)

    async def _send(self, prepared: PreparedSend) -> SendResult:
        """The Graph request itself, inside the in-flight slot."""
        self.stats.in_flight += 1
        on_wire = time.perf_counter()
        try:
            return await prepared.send()
        finally:
            self.stats.in_flight -= 1
            self.stats.slot_seconds += time.perf_counter() - on_wire

    async def _store_trouble(self, lane: _Lane, message: Claimed, exc: StoreError) -> None:
        """The database failed before the send (budget, body, in-flight slot): database trouble never counts
        against a message, so it goes back uncounted, and this connector claims nothing for a moment."""
        log.warning("message %s given back: %s", message.id, exc.message)
        now = self.clock.now()
        lane.no_claims_until = max(lane.no_claims_until or now, now + timedelta(seconds=STORE_PAUSE_SECONDS))
        try:
            await self._record(self.outbox.release, message.id, self.owner, f"database trouble: {exc.message}")
            self.stats.released += 1
        except StoreError as again:  # still away: its lease runs out, or this worker's restart releases it
            log.warning("message %s not given back (%s); its lease will bring it back", message.id, again.message)

    async def _must_wait(self, lane: _Lane, probe: bool, hold: Hold | None = None) -> str | None:
        """Inside a slot, just before sending: honour a throttle that arrived meanwhile. Returns a reason
        to give the message back instead (connector paused, or a long wait ahead)."""
        if self._stopping:
            return "worker shut down before sending"
        if lane.paused and not probe:
            return "connector paused"
        blocked = max((t for t in (lane.blocked_until, hold.until if hold else None) if t is not None), default=None)
        if blocked is None:
            return None
        wait = (blocked - self.clock.now()).total_seconds()
        if wait > LONG_WAIT_SECONDS:
            return hold.reason if hold is not None and hold.until == blocked else f"mailbox throttled for {wait:.0f} s"
        if wait > 0:
            await self.clock.sleep(wait)
        return None

    async def _give_back(self, message: Claimed, reason: str) -> None:
        await self._record(self.outbox.release, message.id, self.owner, reason)
        self.stats.released += 1

    async def _failed(
        self,
        connector: ConnectorConfig,
        lane: _Lane,
        message: Claimed,
        exc: Exception,
        *,
        probe: bool,
        mailbox: str = "",
    ) -> bool:
        now = self.clock.now()
        if (missing := missing_mailbox(connector, mailbox, exc, now)) is not None:  # only its mail waits
            self.holds.hold(connector.id, mailbox, missing)
            await self._record(self.outbox.defer, message.id, self.owner, missing.error, missing.until,
                               missing.reason, uncount=True)  # fmt: skip
            self.stats.deferred += 1
            return True
        decision = self.policy.decide(exc, attempts=message.attempts, expires_at=message.expires_at, now=now)
        error = exc if isinstance(exc, DeliveryError) else None
        if error is None:
            log.error("unexpected error sending message %s", message.id, exc_info=exc)
        if decision.action == "fail":
            await self._record(self.outbox.fail, message.id, self.owner, error, decision.reason)
            self.stats.failed += 1
            self._count("failed")
            return isinstance(exc, MessageError)
        if decision.action == "pause":
            assert isinstance(exc, ConnectorError)
            lane.paused = True
            await self._pause(connector, exc, probe=probe)
            await self._give_back(message, f"connector paused: {decision.reason}")
            return False
        until = now + timedelta(seconds=decision.delay)
        # Before the write: the sends queued for a slot must see the hold when they get one.
        if isinstance(exc, ThrottledError) and decision.delay > 0:
            # The mailbox asked everyone to wait for it, not just this message; the other mailboxes go on.
            why = f"mailbox {label(connector, mailbox)} throttled by Microsoft Graph (Retry-After)"
            self.holds.hold(connector.id, mailbox, Hold(until, why))
        elif isinstance(exc, TokenServiceError) and decision.delay > 0:
            lane.blocked_until = max(lane.blocked_until or now, until)  # the app's tokens: every mailbox waits
        await self._record(self.outbox.defer, message.id, self.owner, error, until, decision.reason)
        self.stats.deferred += 1
        if self.metrics is not None:
            self.metrics.deferrals.labels(error.kind if error else "unexpected").inc()
        self._note_outage(connector, lane, exc)
        if isinstance(exc, PermissionNeededError):  # the connector's state tells the admin what to grant
            await self._record(self.connectors.note_need, connector.id, exc)
        return not isinstance(exc, TokenServiceError)

    async def _hold(self, connector: ConnectorConfig, mailbox: str, message: Claimed, wait: float, why: str) -> None:
        now = self.clock.now()
        until = now + timedelta(seconds=wait)
        reason = f"{why}; next attempt in {wait:.0f} s"
        await self._db(self.outbox.defer, message.id, self.owner, None, until, reason, uncount=True)
        # Messages that already hold budget still go; this mailbox's other mail waits for the window to drain.
        self.holds.hold(connector.id, mailbox, Hold(until, reason))
        self.stats.deferred += 1
        if self.metrics is not None:
            self.metrics.deferrals.labels("budget").inc()

    # -- housekeeping ----------------------------------------------------------------------------

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
        self._stopping = True
        if not self._tasks:
            return
        log.info("waiting up to %.0f s for %d in-flight sends", self.shutdown_grace, len(self._tasks))
        # Messages still waiting for a slot are given back at once (_must_wait); real sends get the grace.
        _, pending = await asyncio.wait(list(self._tasks), timeout=self.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)

    def _count(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.messages_finished.labels(status).inc()
