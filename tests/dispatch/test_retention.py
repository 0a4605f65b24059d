"""Finished mail does not pile up for ever: the dispatcher deletes sent, failed and cancelled messages (bodies
and events with them) once they are older than ``retention_days``, a batch per transaction; waiting mail is
never touched, and ``retention_days = 0`` keeps everything."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from m365relay.clock import ManualClock
from m365relay.connectors import ConnectorUpdate
from m365relay.dispatch.worker import PURGE_BATCH
from m365relay.errors import NotFoundError
from m365relay.graph import OutgoingMessage
from m365relay.runtime import Runtime
from support import make_settings

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def finished_messages(runtime: Runtime, connector_id: int, count: int) -> list[int]:
    ids = []
    for n in range(count):
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "noreply@contoso.com", "r@example.com", f"m{n}"
        message.set_content("a notification")
        ids.append(runtime.outbox.enqueue(connector_id, OutgoingMessage.from_message(message)).id)
    for message_id in ids:
        runtime.outbox.cancel(message_id)  # final, like sent or failed, and never sent anywhere
    return ids


@pytest.mark.parametrize("retention_days", [30, 0])
def test_finished_mail_older_than_the_retention_is_purged(tmp_path: Path, retention_days: int) -> None:
    clock = ManualClock(START)
    runtime = Runtime(make_settings(tmp_path / "home", retention_days=retention_days), clock=clock)
    try:
        connector = runtime.connectors.save(
            "default",
            ConnectorUpdate(
                client_id="4e7a1d93-c2b8-4f60-9a15-8d3c6e2b0f71",
                tenant_id="contoso.onmicrosoft.com",
                user_name="noreply@contoso.com",
            ),
        )
        old = finished_messages(runtime, connector.id, PURGE_BATCH + 20)  # more than one batch
        clock.advance(31 * 86_400)
        recent = finished_messages(runtime, connector.id, 1)

        asyncio.run(runtime.dispatcher().run_until_idle())

        if retention_days == 0:
            assert runtime.outbox.stats().by_status == {"cancelled": len(old) + 1}, "0 keeps everything"
            return
        assert runtime.outbox.stats().by_status == {"cancelled": 1}
        assert runtime.outbox.get(recent[0]).status == "cancelled"
        with pytest.raises(NotFoundError):
            runtime.outbox.headers(old[0])  # the body went with it
    finally:
        runtime.close()
