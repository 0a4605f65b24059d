"""The delivery loop: claim due deliveries, POST each signed to its endpoint, record the outcome.

Claiming is one statement, as the outbox's (STYLE.md §5): ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
LOCKED) RETURNING`` on PostgreSQL, under ``BEGIN IMMEDIATE`` on SQLite. A claim is a lease: a process that
dies mid-request leaves rows whose lease runs out and another process sends them again — at least once, as
Standard Webhooks allows (receivers drop duplicates by ``webhook-id``); in normal operation each delivery is
sent by exactly one process.

A 2xx within ``webhook_timeout`` (15 s) is success. Anything else — another status, a redirect (never
followed: delivery goes only to the URL entered), a timeout, a refused connection — is retried by
``WebhookRetryPolicy``. An endpoint failing without one success for ``webhook_disable_after`` is disabled and
announced (events/alerts.py); its undelivered events stay queued for a replay.

Nothing here logs a URL, a header or a secret, and httpx's request log is silenced (``quiet_http``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import String, cast, func, literal, or_, select, update
from sqlalchemy.orm import Session

from ..clock import Clock, SystemClock
from ..db.engine import Database
from ..db.models import WebhookDeliveryRow, WebhookEndpointRow
from ..net import async_client, quiet_http
from ..outbox import Outbox
from ..settings import Settings
from .alerts import DisabledNotice, announce_disabled
from .endpoints import DELIVERED, FAILED, PENDING, EndpointStore
from .payload import render, render_test
from .policy import WebhookRetryPolicy
from .signer import signed_headers

log = logging.getLogger("m365relay.events.delivery")
D, E = WebhookDeliveryRow, WebhookEndpointRow
LEASE_MARGIN = 45.0  # seconds beyond the request timeout before another process may take a claim over
BATCH = 64


@dataclass(frozen=True)
class Job:
    delivery: WebhookDeliveryRow
    url: str
    secret: str


@dataclass(frozen=True)
class Outcome:
    job: Job
    ok: bool
    status: int | None
    error: str | None


def retry_policy(settings: Settings) -> WebhookRetryPolicy:
    return WebhookRetryPolicy(
        base=settings.webhook_retry_base_seconds,
        maximum=settings.webhook_retry_max_seconds,
        max_age=timedelta(seconds=settings.webhook_max_age),
        disable_after=timedelta(seconds=settings.webhook_disable_after),
    )


class WebhookDeliverer:
    def __init__(
        self,
        db: Database,
        endpoints: EndpointStore,
        outbox: Outbox,
        settings: Settings,
        *,
        clock: Clock | None = None,
        owner: str | None = None,
        policy: WebhookRetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.db = db
        self.endpoints = endpoints
        self.outbox = outbox
        self.settings = settings
        self.clock = clock or SystemClock()
        self.owner = owner or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.policy = policy or retry_policy(settings)
        self.transport = transport
        self.lease = settings.webhook_timeout + LEASE_MARGIN

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set. Never raises for a database or receiver hiccup: it logs and polls
        again (webhooks must not take mail sending down with them)."""
        with quiet_http():
            async with async_client(
                None, self.settings.webhook_timeout, self.transport, max_connections=self.settings.webhook_concurrency
            ) as client:
                while not stop.is_set():
                    try:
                        done = await self.run_once(client)
                    except Exception:
                        log.exception("webhook delivery pass failed; trying again shortly")
                        done = 0
                    if done == 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), self.settings.webhook_poll_interval)

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """One pass: claim, send concurrently, record. Returns how many deliveries were attempted."""
        jobs = await asyncio.to_thread(self.claim, min(BATCH, self.settings.webhook_concurrency))
        if not jobs:
            return 0
        outcomes = await asyncio.gather(*(self._send(client, job) for job in jobs))
        notices = await asyncio.to_thread(self.record, list(outcomes))
        for notice in notices:
            await announce_disabled(notice, self.settings, self.outbox, self.transport)
        return len(jobs)

    # -- claiming ----------------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Job]:
        now = self.clock.now()
        with self.db.read() as session:  # a plain read first: an idle relay takes no write lock every poll
            if session.scalar(select(D.id).where(D.status == PENDING, D.next_attempt_at <= now).limit(1)) is None:
                return []
        enabled = select(E.id).where(E.enabled.is_(True))
        candidates = (
            select(D.id)
            .where(
                D.status == PENDING,
                D.next_attempt_at <= now,
                or_(D.lease_expires_at.is_(None), D.lease_expires_at < now),
                D.endpoint_id.in_(enabled),
            )
            .order_by(D.next_attempt_at, D.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's BEGIN IMMEDIATE serialises claims
        )
        statement = (
            update(D)
            .where(D.id.in_(candidates.scalar_subquery()))
            .values(
                lease_owner=self.owner,
                lease_expires_at=now + timedelta(seconds=self.lease),
                attempts=D.attempts + 1,
                # webhook-id: given once, here rather than on the enqueue path; random per claim + the row's id,
                # so it is unique even across relays posting to one receiver, and kept for retries and replays.
                webhook_id=func.coalesce(
                    D.webhook_id, literal(f"msg_{secrets.token_urlsafe(12)}_") + cast(D.id, String)
                ),
            )
            .returning(D)
            .execution_options(synchronize_session=False)
        )
        with self.db.write() as session:
            rows = list(session.scalars(statement))
            targets = {r.endpoint_id: session.get(E, r.endpoint_id) for r in rows}
            session.expunge_all()
        jobs = []
        for row in rows:
            target = targets.get(row.endpoint_id)
            if target is not None:  # removed between the claim and here: its deliveries went with it
                jobs.append(Job(row, target.url, self.endpoints.box.decrypt(target.secret_ciphertext).reveal()))
        return jobs

    # -- sending -----------------------------------------------------------------------------------

    async def _send(self, client: httpx.AsyncClient, job: Job) -> Outcome:
        status, error = await post_signed(
            client,
            job.url,
            job.secret,
            job.delivery.webhook_id or f"msg_{job.delivery.id}",  # always set by the claim
            render(job.delivery),
            self.clock.now(),
            self.settings.webhook_timeout,
        )
        return Outcome(job, error is None, status, error)

    # -- recording ---------------------------------------------------------------------------------

    def record(self, outcomes: list[Outcome]) -> list[DisabledNotice]:
        now = self.clock.now()
        notices: list[DisabledNotice] = []
        with self.db.write() as session:
            for outcome in sorted(outcomes, key=lambda o: o.job.delivery.id):  # one lock order for every process
                notice = self._record_one(session, outcome, now)
                if notice is not None:
                    notices.append(notice)
        return notices

    def _record_one(self, session: Session, outcome: Outcome, now: datetime) -> DisabledNotice | None:
        row = outcome.job.delivery
        mine = (D.id == row.id, D.lease_owner == self.owner)
        free = {"lease_owner": None, "lease_expires_at": None, "last_status": outcome.status}
        if outcome.ok:
            session.execute(update(D).where(*mine).values(status=DELIVERED, delivered_at=now, last_error=None, **free))
            session.execute(update(E).where(E.id == row.endpoint_id).values(failing_since=None, last_success_at=now))
            return None
        when = self.policy.next_attempt(row.attempts, row.created_at, now)
        state = {"status": FAILED} if when is None else {"next_attempt_at": when}
        session.execute(update(D).where(*mine).values(last_error=outcome.error, **free, **state))
        endpoint = session.get(E, row.endpoint_id, with_for_update=True)
        if endpoint is None:
            return None
        endpoint.failing_since = endpoint.failing_since or now
        endpoint.last_failure_at, endpoint.last_error = now, outcome.error
        if endpoint.enabled and self.policy.should_disable(endpoint.failing_since, now):
            return self._disable(endpoint, now)
        return None

    def _disable(self, endpoint: WebhookEndpointRow, now: datetime) -> DisabledNotice:
        since = endpoint.failing_since or now
        reason = f"every delivery failed since {since.isoformat(timespec='seconds')} (last: {endpoint.last_error})"
        endpoint.enabled, endpoint.disabled_reason, endpoint.updated_at = False, reason, now
        connector = self.endpoints.connectors.find(endpoint.connector_id)
        return DisabledNotice(
            endpoint.id,
            endpoint.connector_id,
            connector.name if connector else str(endpoint.connector_id),
            connector.user_name if connector else "",
            _host(endpoint.url),
            reason,
            now,
        )


async def post_signed(
    client: httpx.AsyncClient, url: str, secret: str, webhook_id: str, body: bytes, now: datetime, limit: float
) -> tuple[int | None, str | None]:
    """One signed POST. (status, None) on a 2xx; otherwise (status or None, what went wrong) — the error
    names the failure's kind only: httpx's messages can quote the URL."""
    headers = signed_headers(secret, webhook_id, int(now.timestamp()), body)
    try:
        async with asyncio.timeout(limit):  # the whole exchange, not each read: 15 s is the contract
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code  # the body is not read: a receiver's answer is not our business
    except TimeoutError:
        return None, f"no answer within {limit:g} s"
    except httpx.HTTPError as exc:
        return None, type(exc).__name__
    if 200 <= status < 300:
        return status, None
    if 300 <= status < 400:
        return status, f"HTTP {status} (redirects are not followed)"
    return status, f"HTTP {status}"


def _host(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "(invalid URL)"
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")


@dataclass(frozen=True)
class TestResult:
    ok: bool
    status: int | None
    error: str | None
    webhook_id: str

    @property
    def text(self) -> str:
        if self.ok:
            return f"the endpoint answered HTTP {self.status}: it receives signed events"
        return f"the endpoint did not take the test event: {self.error}"


async def send_test(
    endpoints: EndpointStore,
    endpoint_id: int,
    settings: Settings,
    *,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> TestResult:
    """POST a signed ``webhook.test`` event now, outside the queue (nothing is retried or counted)."""
    clock = clock or SystemClock()
    endpoint = await asyncio.to_thread(endpoints.get, endpoint_id)
    secret = await asyncio.to_thread(endpoints.secret, endpoint_id)
    webhook_id = f"msg_test_{secrets.token_urlsafe(12)}"
    body = render_test(endpoint.id, endpoint.connector, clock.now())
    with quiet_http():
        async with async_client(None, settings.webhook_timeout, transport, max_connections=1) as client:
            status, error = await post_signed(
                client, endpoint.url, secret, webhook_id, body, clock.now(), settings.webhook_timeout
            )
    return TestResult(error is None, status, error, webhook_id)
