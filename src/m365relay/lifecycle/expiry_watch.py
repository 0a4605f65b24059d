"""The expiry watch: client secrets die silently after at most 24 months (AADSTS7000222, PROTOCOL.md §10)
and nothing in Microsoft 365 warns anyone, so the dispatcher runs this on start and then daily.

For each connector's credential in use it finds the smallest threshold of ``expiry_warning_days`` that the
days left have reached (or 0 once expired) and announces it once: ``credentials.warned_days`` is claimed
with a conditional UPDATE, so however many workers run, exactly one announces each threshold. A watch that
was down across several thresholds announces only the latest — one alert, not a burst of stale ones.

Each announcement is one log line, an e-mail to ``alert_emails`` queued through the expiring connector
itself (only while its credential still works), and a JSON POST to ``alert_webhook_url`` — which is the
channel that keeps working after expiry, when mail cannot. A webhook that still fails after its retries gives
the claim back and the watch tries again an hour later (the e-mail is not queued twice: its idempotency key
names the credential and threshold), so an alert is not lost to a receiver that was down for a minute.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from ..clock import Clock, SystemClock
from ..compose import MessageSpec, compose
from ..connectors import ConnectorConfig, ConnectorStore
from ..connectors.expiry import ExpiryState, expiry_state
from ..errors import M365RelayError
from ..graph import OutgoingMessage
from ..net import async_client, quiet_http
from ..outbox import Outbox
from ..settings import Settings

log = logging.getLogger("m365relay.lifecycle.expiry")

DAY_SECONDS = 86_400.0
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_ATTEMPTS = 3
RETRY_SECONDS = 3600.0  # a threshold whose webhook failed is announced again after this long
EXPIRED = 0  # the threshold recorded once the credential has expired


@dataclass(frozen=True)
class ExpiryNotice:
    """One announcement: a credential reached ``threshold`` days before expiry (0: it has expired)."""

    connector: ConnectorConfig
    threshold: int
    state: ExpiryState
    at: datetime

    @property
    def expired(self) -> bool:
        return self.threshold == EXPIRED

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON. ``text`` makes it readable as-is by Slack/Mattermost-style incoming webhooks.
        Names and dates only: never a secret value (``hint`` is the 3 characters Azure itself shows)."""
        cred = self.state.credential
        assert cred is not None
        return {
            "event": "m365relay.credential_expiry",
            "text": self.state.message,
            "level": self.state.level,
            "expired": self.expired,
            "threshold_days": self.threshold,
            "days_left": self.state.days_left,
            "expires_at": self.state.expires_at.isoformat() if self.state.expires_at else None,
            "connector": self.connector.name,
            "connector_id": self.connector.id,
            "mailbox": self.connector.user_name,
            "client_id": self.connector.client_id,
            "tenant_id": self.connector.tenant_id,
            "credential": {
                "kind": cred.kind,
                "description": cred.describe(),
                "hint": cred.hint,
                "thumbprint_sha1": cred.thumbprint_sha1,
            },
            "next_credential_staged": self.connector.next_credential is not None,
            "at": self.at.isoformat(),
        }


def threshold_for(state: ExpiryState, warning_days: list[int]) -> int | None:
    """The smallest warning threshold the credential has reached, EXPIRED, or None (nothing to say)."""
    if state.credential is None or state.expires_at is None or state.days_left is None:
        return None
    if state.level == "expired":
        return EXPIRED
    reached = [days for days in warning_days if days > 0 and state.days_left <= days]
    return min(reached) if reached else None


class ExpiryWatch:
    def __init__(
        self,
        connectors: ConnectorStore,
        outbox: Outbox,
        settings: Settings,
        *,
        clock: Clock | None = None,
        interval: float = DAY_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.connectors = connectors
        self.outbox = outbox
        self.settings = settings
        self.clock = clock or SystemClock()
        self.interval = interval
        self.transport = transport
        self._last_run: float | None = None
        self._retry_at: float | None = None  # set when an announcement did not get through

    def due(self) -> bool:
        """True on the first call, then once per ``interval`` (and at ``RETRY_SECONDS`` after an announcement
        that did not get through); the caller then runs ``run_quietly()``."""
        now = self.clock.monotonic()
        retry = self._retry_at is not None and now >= self._retry_at
        if not retry and self._last_run is not None and now - self._last_run < self.interval:
            return False
        self._last_run, self._retry_at = now, None
        return True

    async def run_quietly(self) -> None:
        """One pass that never raises (the dispatcher's task): a broken watch must not take sending down."""
        try:
            await self.check()
        except Exception:
            log.exception("the credential expiry check failed; it runs again in %.0f s", self.interval)

    async def check(self, now: datetime | None = None) -> list[ExpiryNotice]:
        """Look at every connector once; announce what newly reached a threshold."""
        now = now or self.clock.now()
        notices = []
        for connector in await asyncio.to_thread(self.connectors.all):
            notice = await asyncio.to_thread(self._claim, connector, now)
            if notice is None:
                continue
            notices.append(notice)
            assert notice.state.credential is not None
            credential_id = notice.state.credential.id
            try:
                delivered = await self._announce(notice)
            except BaseException:  # cancelled (shutdown) or a surprise: the claim must not outlive the attempt
                self._give_back(credential_id, notice.threshold)
                raise
            if not delivered:
                await asyncio.to_thread(self._give_back, credential_id, notice.threshold)
                self._retry_at = self.clock.monotonic() + RETRY_SECONDS
                log.warning(
                    "the expiry alert for connector %s is announced again in %.0f minutes",
                    connector.name,
                    RETRY_SECONDS / 60,
                )
        return notices

    def _give_back(self, credential_id: int, threshold: int) -> None:
        try:
            self.connectors.release_warned(credential_id, threshold)
        except M365RelayError as exc:  # the next daily pass will not repeat it; say so
            log.warning("the expiry alert claim could not be given back (%s); it is not retried", exc.message)

    def _claim(self, connector: ConnectorConfig, now: datetime) -> ExpiryNotice | None:
        state = expiry_state(connector, now)
        threshold = threshold_for(state, self.settings.expiry_warning_days)
        if threshold is None or state.credential is None:
            return None
        if not self.connectors.mark_warned(state.credential.id, threshold):
            return None  # announced already, by this process or another
        return ExpiryNotice(connector, threshold, state, now)

    async def _announce(self, notice: ExpiryNotice) -> bool:
        """Log, queue the e-mail, post the webhook. False when the webhook did not take it."""
        if notice.expired:
            log.error("credential expired: %s", notice.state.message)
        else:
            log.warning("credential expires in %s: %s", _days(notice.state.days_left), notice.state.message)
        if self.settings.alert_emails:
            await asyncio.to_thread(self._queue_email, notice)
        if self.settings.alert_webhook_url:
            return await self._post_webhook(self.settings.alert_webhook_url, notice)
        return True

    # -- channels ----------------------------------------------------------------------------------

    def _queue_email(self, notice: ExpiryNotice) -> None:
        """Queue the alert through the expiring connector itself: durable and within its limits. Once the
        credential has expired the connector cannot send, so only the webhook speaks then."""
        if notice.expired:
            log.info("no alert e-mail for connector %s: its credential has expired", notice.connector.name)
            return
        connector, state = notice.connector, notice.state
        key = f"expiry-alert:{state.credential.id if state.credential else 0}:{notice.threshold}"
        try:
            message = compose(
                MessageSpec(
                    to=list(self.settings.alert_emails),
                    subject=f"[m365relay] {_what(notice)} of connector {connector.name} expires in "
                    f"{_days(state.days_left)}",
                    text=alert_text(notice),
                    headers={"X-M365relay-Alert": "credential-expiry"},
                ),
                default_from=connector.user_name,
            )
            self.outbox.enqueue(
                connector.id,
                OutgoingMessage.from_message(message),
                source="expiry-watch",
                # One e-mail per credential and threshold, even if two processes got this far or the webhook's
                # retry announces again; the key is the content too (the Date and Message-ID differ each time).
                idempotency_key=key,
                content_hash=hashlib.sha256(key.encode()).hexdigest(),
            )
        except M365RelayError as exc:
            log.warning("the expiry alert e-mail for connector %s was not queued: %s", connector.name, exc.message)

    async def _post_webhook(self, url: str, notice: ExpiryNotice) -> bool:
        # quiet_http: a webhook URL (Slack, Teams) is itself a secret and must not reach the log.
        with quiet_http():
            return await self._post_webhook_quietly(url, notice)

    async def _post_webhook_quietly(self, url: str, notice: ExpiryNotice) -> bool:
        problem = ""
        async with async_client(None, WEBHOOK_TIMEOUT, self.transport, max_connections=1) as client:
            for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
                try:
                    response = await client.post(url, json=notice.payload())
                except Exception as exc:  # any failure (a malformed URL too) means "not delivered"
                    problem = type(exc).__name__
                else:
                    if response.status_code < 400:
                        return True
                    problem = f"HTTP {response.status_code}"
                if attempt < WEBHOOK_ATTEMPTS:
                    await self.clock.sleep(4.0 ** (attempt - 1))
        log.warning("the expiry alert webhook failed (%s) for connector %s", problem, notice.connector.name)
        return False


def _days(count: int | None) -> str:
    return "1 day" if count == 1 else f"{count} days"


def _what(notice: ExpiryNotice) -> str:
    cred = notice.state.credential
    return "The certificate" if cred is not None and cred.kind == "certificate" else "The client secret"


def alert_text(notice: ExpiryNotice) -> str:
    c = notice.connector
    return (
        f"{notice.state.message}\n\n"
        f"Connector: {c.name}\nMailbox: {c.user_name}\nApplication (client) ID: {c.client_id}\n"
        f"Directory (tenant) ID: {c.tenant_id}\n\n"
        "To renew without interrupting mail:\n"
        "1. Azure portal > App registrations > the app > Certificates & secrets > New client secret; copy its Value.\n"
        "2. printf '%s' \"$VALUE\" | m365relay connector rotate --name "
        f"{c.name} --secret-stdin --secret-expires YYYY-MM-DD\n"
        "   (or: m365relay cert new, upload the certificate, then m365relay connector rotate)\n"
        "3. Delete the old secret in the Azure portal, then: m365relay connector remove-old\n"
    )
