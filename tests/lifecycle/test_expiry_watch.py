"""The expiry watch with an injected clock: every threshold is announced exactly once — one log line, one
e-mail through the connector itself (while it still works, found in the sandbox), one webhook POST
(received by a real local HTTP server, and still sent after expiry) — and it runs from the dispatcher on
start and then daily."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lifecycle_support import webhook_receiver

from m365relay.clock import ManualClock
from m365relay.connectors import ConnectorUpdate
from m365relay.lifecycle import ExpiryWatch
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update, make_settings

START = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
ALERTS = ["ops@example.com", "security@example.com"]
LOGGER = "m365relay.lifecycle.expiry"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@contextmanager
def runtime_with(tmp_path: Path, clock: ManualClock, **settings: object) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path / "home", **settings), clock=clock)
    try:
        yield runtime
    finally:
        runtime.close()


def watch_for(runtime: Runtime) -> ExpiryWatch:
    return ExpiryWatch(runtime.connectors, runtime.outbox, runtime.settings, clock=runtime.clock)


def alert_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def test_every_threshold_is_announced_once_by_log_email_and_webhook(
    tmp_path: Path, clock: ManualClock, sandbox: SandboxServer, admin: SandboxAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    expires = (START + timedelta(days=40)).date()
    with (
        webhook_receiver() as hook,
        runtime_with(tmp_path, clock, alert_emails=ALERTS, alert_webhook_url=hook.url) as runtime,
    ):
        runtime.connectors.save("default", connector_update(sandbox, secret_expires=expires.isoformat()))
        watch = watch_for(runtime)

        async def day_by_day() -> list[int]:
            announced = []
            dispatcher = runtime.dispatcher()
            dispatcher.expiry_watch = None  # driven by hand here; the next test covers the dispatcher's own
            for day in range(45):
                clock.set(START + timedelta(days=day))
                for _ in range(2):  # a second pass the same day announces nothing new
                    announced += [n.threshold for n in await watch.check()]
                async with asyncio.timeout(60):
                    await dispatcher.run_until_idle()  # the day's alert e-mail goes out
            await runtime.sender.aclose()
            return announced

        announced = asyncio.run(day_by_day())

    assert announced == [30, 14, 7, 3, 1, 0]
    lines = alert_lines(caplog)
    assert len(lines) == 6, lines
    for line, days in zip(lines, ["30 days", "14 days", "7 days", "3 days", "1 day"], strict=False):
        assert f"expires in {days}:" in line and expires.isoformat() in line and "connector default" in line
    assert lines[-1].startswith("credential expired") and "mail cannot be sent" in lines[-1]
    assert admin.demo["secret_value"] not in "\n".join(lines)

    assert [p["threshold_days"] for p in hook.received] == [30, 14, 7, 3, 1, 0]
    assert hook.received[-1]["expired"] is True and hook.received[-1]["level"] == "expired"
    first = hook.received[0]
    assert first["connector"] == "default" and first["days_left"] == 30 and first["credential"]["kind"] == "secret"
    assert first["text"].startswith("The client secret of connector default expires on")
    assert admin.demo["secret_value"] not in str(hook.received)

    mails = admin.messages()
    assert len(mails) == 5, "one e-mail per threshold while the secret works; none once it has expired"
    assert all(sorted(m["to"]) == sorted(ALERTS) for m in mails)
    subjects = sorted(m["subject"] for m in mails)
    for days in ("30 days", "14 days", "7 days", "3 days", "1 day"):
        assert f"[m365relay] The client secret of connector default expires in {days}" in subjects
    body = admin.detail(mails[0]["id"])["text"]
    assert "m365relay connector rotate" in body and "remove-old" in body


def test_the_dispatcher_runs_the_watch_on_start_and_then_daily(
    tmp_path: Path, clock: ManualClock, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with runtime_with(tmp_path, clock) as runtime:
        expires = (START + timedelta(days=10)).date().isoformat()
        runtime.connectors.save("default", connector_update(sandbox, secret_expires=expires))
        dispatcher = runtime.dispatcher()
        assert dispatcher.expiry_watch is not None

        async def go() -> None:
            async with asyncio.timeout(60):
                await dispatcher.run_until_idle()  # on start: 10 days left → the 14-day warning
                assert len(alert_lines(caplog)) == 1
                clock.advance(3600)
                await dispatcher.run_until_idle()  # within the day: not run again
                clock.advance(3 * 86_400)
                await dispatcher.run_until_idle()  # next daily run: 7 days left
            await runtime.sender.aclose()

        asyncio.run(go())
    lines = alert_lines(caplog)
    assert len(lines) == 2 and "expires in 10 days" in lines[0] and "in 7 days" in lines[1]


def test_due_on_start_then_once_per_interval(tmp_path: Path, clock: ManualClock) -> None:
    with runtime_with(tmp_path, clock) as runtime:
        watch = watch_for(runtime)
        assert watch.due() and not watch.due()
        clock.advance(86_399)
        assert not watch.due()
        clock.advance(1)
        assert watch.due()


def test_a_failing_webhook_is_retried_then_logged_and_nothing_breaks(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with webhook_receiver(status=500) as hook, runtime_with(tmp_path, clock, alert_webhook_url=hook.url) as runtime:
        runtime.connectors.save("default", offline_connector(START + timedelta(days=2)))
        notices = asyncio.run(watch_for(runtime).check())
    assert [n.threshold for n in notices] == [3]
    assert hook.attempts == 3 and clock.slept == [1.0, 4.0]
    assert any("webhook failed (HTTP 500)" in line for line in alert_lines(caplog))


def test_an_alert_the_webhook_missed_is_announced_again_an_hour_later(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with (
        webhook_receiver(status=503) as hook,
        runtime_with(tmp_path, clock, alert_emails=ALERTS, alert_webhook_url=hook.url) as runtime,
    ):
        runtime.connectors.save("default", offline_connector(START + timedelta(days=2)))
        watch = watch_for(runtime)
        assert watch.due()
        assert [n.threshold for n in asyncio.run(watch.check())] == [3]
        assert hook.received == [] and any("announced again in 60 minutes" in line for line in alert_lines(caplog))

        hook.status = 204  # the receiver is back
        clock.advance(3599)
        assert not watch.due()
        clock.advance(1)
        assert watch.due(), "a missed alert is retried within the hour, not the next day"
        assert [n.threshold for n in asyncio.run(watch.check())] == [3]
        assert [p["threshold_days"] for p in hook.received] == [3]
        assert asyncio.run(watch.check()) == [], "delivered now: not announced a third time"
        assert runtime.outbox.stats().by_status == {"queued": 1}, "the alert e-mail was queued once"
        assert not any("not queued" in line for line in alert_lines(caplog)), "and the repeat is no error"


def test_a_webhook_url_that_cannot_be_posted_to_is_retried_like_a_failing_one(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with runtime_with(tmp_path, clock) as runtime:
        runtime.connectors.save("a", offline_connector(START + timedelta(days=2)))
        runtime.connectors.save("b", offline_connector(START + timedelta(days=5)))
        # Settings refuse such a URL at start (test_settings); a copy skips validation, as a bug might.
        settings = runtime.settings.model_copy(update={"alert_webhook_url": "http://[::1/hook"})
        watch = ExpiryWatch(runtime.connectors, runtime.outbox, settings, clock=runtime.clock)
        assert watch.due()
        notices = asyncio.run(watch.check())
        assert sorted(n.threshold for n in notices) == [3, 7], "one bad URL does not stop the other connectors"
        clock.advance(3600)
        assert watch.due(), "and the announcements are tried again"
    assert sum("webhook failed (InvalidURL)" in line for line in alert_lines(caplog)) == 2


def test_an_announcement_cut_short_by_shutdown_is_made_again(tmp_path: Path, clock: ManualClock) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
    try:
        with runtime_with(tmp_path, clock, alert_webhook_url=url) as runtime:
            runtime.connectors.save("default", offline_connector(START + timedelta(days=2)))

            async def cut_short() -> None:
                task = asyncio.create_task(watch_for(runtime).check())
                await asyncio.sleep(0.3)  # the POST is waiting for an answer
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

            asyncio.run(cut_short())
            with webhook_receiver() as hook:
                settings = runtime.settings.model_copy(update={"alert_webhook_url": hook.url})
                watch = ExpiryWatch(runtime.connectors, runtime.outbox, settings, clock=runtime.clock)
                assert [n.threshold for n in asyncio.run(watch.check())] == [3]
                assert [p["threshold_days"] for p in hook.received] == [3]
    finally:
        silent.close()


def test_a_changed_expiry_date_starts_the_announcements_afresh(tmp_path: Path, clock: ManualClock) -> None:
    with runtime_with(tmp_path, clock) as runtime:
        runtime.connectors.save("default", offline_connector(START + timedelta(days=5)))
        watch = watch_for(runtime)
        assert [n.threshold for n in asyncio.run(watch.check())] == [7]
        runtime.connectors.save("default", ConnectorUpdate(secret_expires=(START + timedelta(days=20)).date()))
        assert [n.threshold for n in asyncio.run(watch.check())] == [30]


def test_two_processes_announce_each_threshold_exactly_once(
    tmp_path: Path, clock: ManualClock, database_url: str
) -> None:
    settings = make_settings(tmp_path / "home", database_url=database_url)
    first, second = Runtime(settings, clock=clock), Runtime(settings, clock=clock)
    try:
        first.connectors.save("default", offline_connector(START + timedelta(days=1)))

        async def both() -> int:
            a, b = watch_for(first), watch_for(second)
            results = await asyncio.gather(*(w.check() for _ in range(5) for w in (a, b)))
            return sum(len(r) for r in results)

        assert asyncio.run(both()) == 1
    finally:
        first.close()
        second.close()


def offline_connector(expires: datetime) -> ConnectorUpdate:
    """A connector that is never used to send (no alert e-mails configured in these tests)."""
    return ConnectorUpdate(
        client_id="4e7a1d93-c2b8-4f60-9a15-8d3c6e2b0f71",
        tenant_id="9b2f6c41-7d3e-4a58-b1c9-2e8d5f0a7c36",
        user_name="noreply@contoso.com",
        secret="wY8Q~1wA5l~RCKuDZC1qCH46Xik7-wKjvFZ_lu3S",
        secret_expires=expires.date(),
    )
