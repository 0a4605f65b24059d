"""The outbox pages: the list with its filters and paging, a message's headers, recipients, events and last
error with its remedy, Retry and Cancel (POST + CSRF, audited), and each connector's state."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

from admin_support import AdminClient, text
from sqlalchemy import select

from m365relay import Relay
from m365relay.clock import ManualClock
from m365relay.connectors import ConnectorConfig
from m365relay.db.models import AuditRow
from m365relay.errors import Diagnostics, InvalidRecipientsError, MailboxNotEnabledError
from m365relay.runtime import Runtime


def enqueue(runtime: Runtime, to: str, subject: str) -> int:
    return Relay(runtime=runtime).enqueue(to=[to], subject=subject, text="hello")


def listed_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<td><a href="/admin/outbox/(\d+)">\d+</a></td>', page)]


def fail_one(runtime: Runtime, connector: ConnectorConfig, message_id: int) -> None:
    [claimed] = runtime.outbox.claim("test-worker", connector.id, 1, 60)
    assert claimed.id == message_id
    error = InvalidRecipientsError(
        "At least one recipient is not valid.",
        diagnostics=Diagnostics(status=400, code="ErrorInvalidRecipients", request_id="req-123"),
    )
    runtime.outbox.fail(message_id, "test-worker", error, "Graph refused the recipients")


def test_the_list_filters_and_pages(
    client: AdminClient, runtime: Runtime, connector: ConnectorConfig, clock: ManualClock
) -> None:
    old = enqueue(runtime, "old@contoso.com", "Old report")
    clock.advance(2 * 3600)
    ids = [enqueue(runtime, f"user{i}@contoso.com", f"Report {i}") for i in range(54)]
    runtime.outbox.cancel(ids[0])
    assert client.login().status_code == 303
    signed_in = client
    page = signed_in.get("/admin/outbox").text
    assert listed_ids(page) == list(reversed(ids))[:50], "newest first, 50 a page"
    older = re.search(r'<a href="/admin/outbox\?([^"]+)" rel="next">Older messages</a>', page)
    assert older
    second = signed_in.get(f"/admin/outbox?{unescape(older.group(1))}").text
    assert listed_ids(second) == [*list(reversed(ids))[50:], old]
    assert "Newest" in second
    assert listed_ids(signed_in.get("/admin/outbox?status=cancelled").text) == [ids[0]]
    assert listed_ids(signed_in.get("/admin/outbox?recipient=user7@").text) == [ids[7]]
    assert listed_ids(signed_in.get("/admin/outbox?age=old:1h").text) == [old]
    assert len(listed_ids(signed_in.get("/admin/outbox?age=new:1h").text)) == 50
    assert listed_ids(signed_in.get(f"/admin/outbox?connector={connector.id}&recipient=old@").text) == [old]
    assert "No messages match." in signed_in.get("/admin/outbox?recipient=nobody").text


def test_bad_filters_are_named(signed_in: AdminClient, connector: ConnectorConfig) -> None:
    for query, says in (
        ("status=lost", "Status 'lost' is not one of"),
        ("connector=99", "There is no connector '99'"),
        ("age=forever", "Age 'forever' is not one of the offered choices"),
        ("before=abc", "The page marker 'abc' is not a message number"),
    ):
        response = signed_in.get(f"/admin/outbox?{query}")
        assert response.status_code == 400 and says in unescape(response.text), query


def test_a_message_in_detail_with_its_error_and_remedy(
    signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig
) -> None:
    message_id = enqueue(runtime, "someone@contoso.com", "Invoice <42> & more")
    fail_one(runtime, connector, message_id)
    page = text(signed_in.get(f"/admin/outbox/{message_id}").text)
    assert "Message " + str(message_id) + ": Invoice <42> & more" in page
    assert "Subject: Invoice <42> & more" in page, "the stored header block"
    assert "someone@contoso.com" in page
    assert "InvalidRecipientsError (ErrorInvalidRecipients), HTTP 400" in page
    assert "What to do: At least one recipient address is not valid." in page
    assert "req-123" in page
    assert "Graph refused the recipients" in page, "the events"
    buttons = signed_in.get(f"/admin/outbox/{message_id}").text
    assert "Retry now" in buttons and ">Cancel<" not in buttons, "failed mail can be retried, not cancelled"
    listing = unescape(signed_in.get("/admin/outbox?status=failed").text)
    assert "ErrorInvalidRecipients" in listing


def test_retry_and_cancel(signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig) -> None:
    message_id = enqueue(runtime, "someone@contoso.com", "Weekly")
    page = signed_in.get(f"/admin/outbox/{message_id}").text
    assert "Retry now" in page and ">Cancel<" in page
    response = signed_in.post(f"/admin/outbox/{message_id}/cancel")
    assert response.headers["location"] == f"/admin/outbox/{message_id}"
    assert f"Message {message_id} cancelled" in signed_in.follow(response).text
    assert runtime.outbox.get(message_id).status == "cancelled"
    again = signed_in.follow(signed_in.post(f"/admin/outbox/{message_id}/cancel")).text
    assert f"Message {message_id} was not changed" in again and "only queued or deferred mail" in again
    retried = signed_in.follow(signed_in.post(f"/admin/outbox/{message_id}/retry")).text
    assert f"Message {message_id} queued again" in retried
    assert runtime.outbox.get(message_id).status == "queued"
    with runtime.db.read() as session:
        actions = [
            (e.action, e.target, e.actor)
            for e in session.scalars(select(AuditRow).where(AuditRow.action.startswith("message.")))
        ]
    assert actions == [
        ("message.cancel", str(message_id), "web:alice"),
        ("message.retry", str(message_id), "web:alice"),
    ]
    events = [e.kind for e in runtime.outbox.get(message_id).events]
    assert events[-2:] == ["cancelled", "retry"]


def test_unknown_messages_are_a_404_page(signed_in: AdminClient) -> None:
    for path in ("/admin/outbox/999", "/admin/outbox/abc", "/admin/outbox/" + "9" * 40):
        response = signed_in.get(path)
        assert response.status_code == 404 and "No such message" in response.text


def test_the_connector_state_is_summarised(
    signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig
) -> None:
    enqueue(runtime, "a@contoso.com", "waiting")
    runtime.connectors.pause(
        connector.id,
        MailboxNotEnabledError("the mailbox cannot send through Graph", diagnostics=Diagnostics(status=404)),
        runtime.clock.now() + timedelta(minutes=5),
    )
    page = text(signed_in.get("/admin/outbox").text)
    assert "Paused" in page and "the mailbox cannot send through Graph" in page
    assert "queued 1" in page
    assert MailboxNotEnabledError.default_remedy in page
