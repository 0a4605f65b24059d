"""The alert when an endpoint is disabled after persistent failure: a log line, the JSON POST to
``M365RELAY_ALERT_WEBHOOK_URL`` (the channel the expiry watch uses), and an e-mail to
``M365RELAY_ALERT_EMAILS`` queued through the endpoint's own connector.

Only the process whose conditional UPDATE disabled the endpoint announces it, so it is said once. The
endpoint is named by id, connector and host — its path and query may hold a token, and are left out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from ..compose import MessageSpec, compose
from ..errors import M365RelayError
from ..graph import OutgoingMessage
from ..net import async_client, quiet_http
from ..outbox import Outbox
from ..settings import Settings
from .payload import iso

log = logging.getLogger("m365relay.events.alerts")
ALERT_TIMEOUT = 10.0


@dataclass(frozen=True)
class DisabledNotice:
    endpoint_id: int
    connector_id: int
    connector: str
    mailbox: str  # the connector's mailbox: the alert e-mail's From
    host: str
    reason: str
    at: datetime

    @property
    def text(self) -> str:
        return (
            f"m365relay disabled webhook endpoint {self.endpoint_id} ({self.host}, connector {self.connector}): "
            f"{self.reason}. Its events are kept; fix the receiver, then: m365relay webhook replay "
            f"{self.endpoint_id} --since 3d"
        )

    def payload(self) -> dict[str, Any]:
        return {
            "event": "m365relay.webhook_disabled",
            "text": self.text,
            "level": "error",
            "endpoint_id": self.endpoint_id,
            "connector": self.connector,
            "host": self.host,
            "reason": self.reason,
            "at": iso(self.at),
        }


async def announce_disabled(
    notice: DisabledNotice, settings: Settings, outbox: Outbox, transport: httpx.AsyncBaseTransport | None = None
) -> None:
    log.error("%s", notice.text)
    if settings.alert_emails:
        await asyncio.to_thread(_queue_email, notice, settings, outbox)
    if settings.alert_webhook_url:
        with quiet_http():  # the alert URL is a credential (see lifecycle/expiry_watch.py)
            try:
                async with async_client(None, ALERT_TIMEOUT, transport, max_connections=1) as client:
                    response = await client.post(settings.alert_webhook_url, json=notice.payload())
                if response.status_code >= 400:
                    log.warning(
                        "the alert webhook answered HTTP %s to the endpoint-disabled alert", response.status_code
                    )
            except Exception as exc:  # an alert that fails must not stop deliveries to the other endpoints
                log.warning("the alert webhook failed (%s) for the endpoint-disabled alert", type(exc).__name__)


def _queue_email(notice: DisabledNotice, settings: Settings, outbox: Outbox) -> None:
    key = f"webhook-disabled:{notice.endpoint_id}:{int(notice.at.timestamp())}"
    try:
        message = compose(
            MessageSpec(
                to=list(settings.alert_emails),
                subject=f"[m365relay] webhook endpoint {notice.endpoint_id} ({notice.host}) was disabled",
                text=notice.text + "\n",
                headers={"X-M365relay-Alert": "webhook-disabled"},
            ),
            default_from=notice.mailbox,
        )
        outbox.enqueue(
            notice.connector_id,
            OutgoingMessage.from_message(message),
            source="webhooks",
            idempotency_key=key,
            content_hash=hashlib.sha256(key.encode()).hexdigest(),
        )
    except M365RelayError as exc:
        log.warning("the endpoint-disabled alert e-mail was not queued: %s", exc.message)
