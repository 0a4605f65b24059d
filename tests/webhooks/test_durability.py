"""A receiver that is down gets its events later, across a restart; one that keeps failing is disabled with
an alert; a replay delivers again; two processes on PostgreSQL deliver each event once."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select
from webhook_support import add_active, receiver, run_loops

from m365relay.client import verify_webhook
from m365relay.db.models import WebhookDeliveryRow
from m365relay.relay import Relay
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update, make_settings

FAST = {"webhook_retry_base_seconds": 0.2, "webhook_retry_max_seconds": 1.0, "webhook_poll_interval": 0.05}


def statuses(runtime: Runtime) -> list[str]:
    with runtime.db.read() as session:
        return list(session.scalars(select(WebhookDeliveryRow.status).order_by(WebhookDeliveryRow.id)))


def test_a_receiver_that_was_down_gets_the_event_after_a_restart(
    database_url: str, tmp_path: Path, sandbox: SandboxServer
) -> None:
    settings = make_settings(tmp_path / "home", database_url, **FAST)
    with receiver(status=503) as hook:
        first = Runtime(settings)
        first.connectors.save("default", connector_update(sandbox))
        secret = add_active(first, hook.url, "accepted", "default").secret
        message_id = Relay(runtime=first).enqueue(to=["a@example.com"], subject="s", text="x")
        run_loops(first, lambda: len(hook.requests) >= 2, dispatch=False)
        first.close()  # the process stops with the event undelivered
        assert hook.accepted() == []
        hook.status = 200  # the receiver comes back
        second = Runtime(settings)
        try:
            run_loops(second, lambda: len(hook.accepted()) == 1, dispatch=False)
            assert statuses(second) == ["delivered"]
        finally:
            second.close()
    (request,) = hook.accepted()
    assert verify_webhook(request.body, request.headers, secret)["data"]["message"]["id"] == message_id
    assert {r.headers["webhook-id"] for r in hook.requests} == {request.headers["webhook-id"]}


def test_an_endpoint_that_keeps_failing_is_disabled_with_an_alert_and_replay_delivers(
    database_url: str, tmp_path: Path, sandbox: SandboxServer
) -> None:
    with receiver(status=500) as hook, receiver(status=204) as alerts:
        settings = make_settings(
            tmp_path / "home", database_url, webhook_disable_after=1, alert_webhook_url=alerts.url, **FAST
        )
        runtime = Runtime(settings)
        try:
            runtime.connectors.save("default", connector_update(sandbox))
            hook_url = hook.url.replace("http://", "http://user:hunter2@") + "?token=abc"
            endpoint = add_active(runtime, hook_url, "accepted", "default").endpoint
            Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="s", text="x")
            run_loops(runtime, lambda: not runtime.webhooks.get(endpoint.id).enabled, dispatch=False)
            disabled = runtime.webhooks.get(endpoint.id)
            assert disabled.disabled_reason and "HTTP 500" in disabled.disabled_reason
            assert len(alerts.accepted()) == 1, "announced once"
            alert = alerts.accepted()[0].event
            assert alert["event"] == "m365relay.webhook_disabled" and alert["endpoint_id"] == endpoint.id
            assert "hunter2" not in alerts.accepted()[0].body.decode() and "token" not in alert["text"]
            tried = len(hook.requests)
            # Disabled: new events are not queued for it, and nothing more is sent to it.
            Relay(runtime=runtime).enqueue(to=["b@example.com"], subject="s", text="x")
            assert statuses(runtime) == ["pending"]
            hook.status = 204
            assert runtime.webhooks.replay(endpoint.id) == 1
            assert runtime.webhooks.get(endpoint.id).enabled
            run_loops(runtime, lambda: statuses(runtime) == ["delivered"], dispatch=False)
            assert len(hook.requests) == tried + 1 and len(hook.accepted()) == 1
            assert hook.accepted()[0].headers.get("authorization", "").startswith("Basic "), "the URL as entered"
            assert hook.accepted()[0].path == "/hooks/m365relay?token=abc"
        finally:
            runtime.close()


def test_two_processes_on_postgresql_deliver_each_event_once(
    pg_url: str, tmp_path: Path, sandbox: SandboxServer
) -> None:
    settings = make_settings(tmp_path / "home", pg_url, webhook_concurrency=4, **FAST)
    one, two = Runtime(settings), Runtime(settings, migrate=False)
    try:
        one.connectors.save("default", connector_update(sandbox))
        with receiver() as hook:
            add_active(one, hook.url, "accepted", "default")
            relay = Relay(runtime=one)
            count = 40
            for n in range(count):
                relay.enqueue(to=[f"r{n}@example.com"], subject="s", text="x")
            done = threading.Event()

            def other_process() -> None:
                run_loops(two, done.is_set, dispatch=False, owner="two")

            thread = threading.Thread(target=other_process)
            thread.start()
            try:
                run_loops(one, lambda: statuses(one) == ["delivered"] * count, dispatch=False, owner="one")
            finally:
                done.set()
                thread.join()
            ids = [r.headers["webhook-id"] for r in hook.requests]
        assert len(ids) == count and len(set(ids)) == count, "each event delivered exactly once"
        with one.db.read() as session:
            attempts = set(session.scalars(select(WebhookDeliveryRow.attempts)))
        assert attempts == {1}, "no event was attempted twice"
    finally:
        one.close()
        two.close()


def test_the_delivery_loop_survives_a_receiver_that_never_answers(
    database_url: str, tmp_path: Path, sandbox: SandboxServer
) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
    runtime = Runtime(make_settings(tmp_path / "home", database_url, webhook_timeout=0.5, **FAST))
    try:
        runtime.connectors.save("default", connector_update(sandbox))
        endpoint = add_active(runtime, url, "accepted", "default").endpoint
        Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="s", text="x")
        run_loops(runtime, lambda: runtime.webhooks.get(endpoint.id).last_error is not None, dispatch=False)
        assert runtime.webhooks.get(endpoint.id).last_error == "no answer within 0.5 s"
    finally:
        runtime.close()
        listener.close()
