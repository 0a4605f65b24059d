"""End to end: real sends through the dispatcher to the sandbox, events fanned out in the same transaction,
delivered signed to a real HTTP receiver on 127.0.0.1 and verified with the client's helper."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select
from webhook_support import add_active, receiver, run_loops, wait_for

from m365relay.client import verify_webhook
from m365relay.db.models import WebhookDeliveryRow
from m365relay.outbox.store import _event
from m365relay.relay import Relay
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update


def deliveries(runtime: Runtime) -> list[WebhookDeliveryRow]:
    with runtime.db.read() as session:
        rows = list(session.scalars(select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.id)))
        session.expunge_all()
        return rows


def test_receiver_gets_accepted_sent_and_failed_with_valid_signatures(
    wh_runtime: Runtime, sandbox: SandboxServer
) -> None:
    runtime = wh_runtime
    runtime.connectors.save("default", connector_update(sandbox))
    relay = Relay(runtime=runtime)
    with receiver() as hook:
        issued = add_active(runtime, hook.url, None, "default")
        good = relay.enqueue(to=["ok@example.com"], subject="Secret subject", text="secret body", idempotency_key="k-1")
        bad = relay.enqueue(to=["ok@example.com"], subject="bad", text="x", envelope=["nobody@bad_domain.example"])
        run_loops(runtime, lambda: sorted(hook.types()).count("message.accepted") == 2 and len(hook.types()) >= 4)
        events = {}
        for request in hook.accepted():
            event = verify_webhook(request.body, request.headers, issued.secret)
            events[(event["data"]["message"]["id"], event["type"])] = (event, request)
    assert set(events) == {
        (good, "message.accepted"), (good, "message.sent"), (bad, "message.accepted"), (bad, "message.failed")
    }  # fmt: skip
    sent, request = events[(good, "message.sent")]
    record = runtime.outbox.get(good)
    message = sent["data"]["message"]
    assert message == {
        "id": good,
        "message_id": record.message_id,
        "idempotency_key": "k-1",
        "connector": "default",
        "recipients": ["ok@example.com"],
    }
    assert sent["data"]["event"] == "sent" and sent["data"]["graph_request_id"] == record.graph_request_id
    assert request.headers["webhook-id"].startswith("msg_")
    assert int(request.headers["webhook-timestamp"]) > 0
    assert request.headers["webhook-signature"].startswith("v1,")
    failed, _ = events[(bad, "message.failed")]
    assert failed["data"]["detail"], "the failure's reason is carried"
    bodies = b"".join(r.body for r in hook.accepted())
    assert b"secret body" not in bodies and b"Secret subject" not in bodies, "never a body or a subject"
    assert issued.secret.encode() not in bodies
    ids = [r.headers["webhook-id"] for r in hook.accepted()]
    assert len(ids) == len(set(ids)) == 4, "one webhook-id per event"


def test_a_bounce_written_through_the_event_helper_is_delivered_with_its_recipient_details(
    wh_runtime: Runtime, sandbox: SandboxServer
) -> None:
    runtime = wh_runtime
    runtime.connectors.save("default", connector_update(sandbox))
    with receiver() as hook:
        issued = add_active(runtime, hook.url, ["bounced", "delayed"], "default")
        message_id = Relay(runtime=runtime).enqueue(to=["nobody@contoso.com"], subject="s", text="t")
        detail = {
            "recipient": "nobody@contoso.com",
            "status": "5.1.10",
            "diagnostic": "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            "reported_at": "2026-12-01T10:00:00+00:00",
        }
        with runtime.db.write() as session:  # how the bounce intake records it (issue 16 items 1–2)
            _event(session, message_id, runtime.clock.now(), "bounced", json.dumps(detail))
        run_loops(runtime, lambda: len(hook.accepted()) >= 1, dispatch=False)
        (request,) = hook.accepted()
    event = verify_webhook(request.body, request.headers, issued.secret)
    assert event["type"] == "message.bounced", "the accepted event was not subscribed to, so it never came"
    data = event["data"]
    assert {k: data[k] for k in detail} == detail
    assert data["message"]["id"] == message_id


def test_an_endpoint_added_by_another_process_gets_the_events_from_its_activation_on(
    wh_runtime: Runtime, sandbox: SandboxServer
) -> None:
    runtime = wh_runtime
    runtime.connectors.save("default", connector_update(sandbox))
    relay = Relay(runtime=runtime)
    relay.enqueue(to=["a@example.com"], subject="before", text="x")  # this process now caches "no endpoint"
    assert deliveries(runtime) == [], "no endpoint: nothing is queued"
    other = Runtime(runtime.settings, migrate=False)
    try:
        endpoint = other.webhooks.add("http://127.0.0.1:9/x", "accepted", "default").endpoint
    finally:
        other.close()
    assert endpoint.active_from > endpoint.created_at, "it takes events once every process can have seen it"
    wait_for(lambda: runtime.clock.now() >= endpoint.active_from)
    after = relay.enqueue(to=["b@example.com"], subject="after", text="x")
    rows = deliveries(runtime)
    assert [(r.endpoint_id, r.message_ref, r.event_type) for r in rows] == [(endpoint.id, after, "accepted")]
    assert rows[0].webhook_id is None, "its webhook-id is given when it is first claimed, off the enqueue path"


def test_events_go_only_to_their_connectors_endpoints_and_subscriptions(
    wh_runtime: Runtime, sandbox: SandboxServer
) -> None:
    runtime = wh_runtime
    runtime.connectors.save("default", connector_update(sandbox))
    runtime.connectors.save("other", connector_update(sandbox))
    mine = add_active(runtime, "http://127.0.0.1:9/a", "accepted,sent", "default").endpoint
    add_active(runtime, "http://127.0.0.1:9/b", "accepted", "other")
    add_active(runtime, "http://127.0.0.1:9/c", "failed", "default")
    message_id = Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="s", text="x")
    assert [(r.endpoint_id, r.event_type) for r in deliveries(runtime)] == [(mine.id, "accepted")]
    assert deliveries(runtime)[0].message_ref == message_id


def test_a_delivery_keeps_its_webhook_id_and_is_given_up_after_the_max_age(
    wh_runtime: Runtime, sandbox: SandboxServer
) -> None:
    runtime = wh_runtime
    runtime.connectors.save("default", connector_update(sandbox))
    with receiver(status=503) as hook:
        add_active(runtime, hook.url, "accepted", "default")
        Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="s", text="x")
        run_loops(runtime, lambda: len(hook.requests) >= 3, dispatch=False)
    assert len({r.headers["webhook-id"] for r in hook.requests}) == 1, "the same webhook-id on every retry"
    assert len({r.body for r in hook.requests}) == 1, "and the same body"
    (row,) = deliveries(runtime)
    assert row.status == "pending" and row.last_status == 503 and row.attempts >= 3
    # Three days on, the policy gives up.
    policy = runtime.webhook_deliverer().policy
    assert policy.next_attempt(row.attempts, row.created_at, row.created_at + timedelta(days=3)) is None
    assert policy.next_attempt(1, row.created_at, row.created_at) is not None
