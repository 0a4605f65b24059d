"""The message endpoints through a real socket: submit (JSON and raw), follow, list with cursors, retry,
cancel, idempotency, and the connector list."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from api_support import Api, api_settings, drain, serve_api

from m365relay.relay import Relay
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update

PROBLEM = "application/problem+json"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_post_answers_202_with_id_status_url_and_location_after_commit(api: Api) -> None:
    client = api.client()
    response = client.post("/messages", json={"to": ["a@example.com"], "subject": "Hi", "text": "hello"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and isinstance(body["id"], int)
    assert body["status_url"] == f"{api.base}/messages/{body['id']}"
    assert response.headers["location"] == body["status_url"]
    assert "idempotent-replayed" not in response.headers
    record = api.runtime.outbox.get(body["id"])  # committed before the answer
    assert record.source == "api" and (record.source_detail or "").startswith("app (")
    assert record.recipients == ("a@example.com",) and record.subject == "Hi"


def test_get_shows_status_attempts_events_and_connector(api: Api) -> None:
    client = api.client()
    message_id = client.post("/messages", json={"to": ["a@example.com"], "text": "x"}).json()["id"]
    response = client.get(f"/messages/{message_id}")
    assert response.status_code == 200
    view = response.json()
    assert view["id"] == message_id and view["status"] == "queued" and view["attempts"] == 0
    assert view["connector"] == "default" and view["last_error"] is None
    assert [e["kind"] for e in view["events"]] == ["queued"]


def test_get_unknown_message_is_a_404_problem(api: Api) -> None:
    response = api.client().get("/messages/999999")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://m365relay.dev/problems/not-found"
    assert problem["status"] == 404 and "999999" in problem["detail"]
    assert problem["instance"] == "/api/v1/messages/999999"


def test_idempotency_same_body_replays_different_body_conflicts(api: Api) -> None:
    client = api.client()
    body = {"to": ["a@example.com"], "subject": "once", "text": "x"}
    first = client.post("/messages", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202
    # Same content, keys in another order and other whitespace: the same request.
    again = client.post(
        "/messages",
        content='{"text": "x",  "subject": "once", "to": ["a@example.com"]}',
        headers={"Idempotency-Key": "order-42", "Content-Type": "application/json"},
    )
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = client.post("/messages", json={**body, "text": "y"}, headers={"Idempotency-Key": "order-42"})
    assert other.status_code == 409
    assert other.json()["type"] == "https://m365relay.dev/problems/idempotency-conflict"
    assert api.runtime.outbox.pending_count() == 1


def test_idempotency_key_is_at_most_255_characters(api: Api) -> None:
    response = api.client().post("/messages", json={"to": ["a@example.com"]}, headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


def test_validation_errors_name_each_field(api: Api) -> None:
    response = api.client().post(
        "/messages",
        json={
            "to": ["a@example.com"],
            "importance": "urgent",
            "attachments": [{"filename": "a.txt", "content": "***"}],
            "too": ["typo@example.com"],
        },
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "https://m365relay.dev/problems/validation-error"
    assert problem["title"] and problem["status"] == 422 and problem["instance"] == "/api/v1/messages"
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert set(fields) == {"importance", "attachments[0].content", "too"}
    assert "base64" in fields["attachments[0].content"]
    assert "importance" in problem["detail"]


def test_bad_addresses_from_compose_name_the_field(api: Api) -> None:
    response = api.client().post("/messages", json={"to": ["not-an-address"], "text": "x"})
    assert response.status_code == 422
    # the entry is named, and why it is not an address (one parser: m365relay.addresses)
    assert response.json()["errors"] == [
        {"field": "to[0]", "message": "'not-an-address' is not an e-mail address: no '@'"}
    ]
    none = api.client().post("/messages", json={"subject": "nobody"})
    assert none.status_code == 422 and none.json()["errors"][0]["field"] == "to"


def test_only_x_headers_are_accepted(api: Api) -> None:
    response = api.client().post(
        "/messages", json={"to": ["a@example.com"], "headers": {"X-Ok": "1", "Reply-To": "b@example.com"}}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "headers.Reply-To"
    assert api.runtime.outbox.pending_count() == 0


def test_invalid_json_is_a_problem(api: Api) -> None:
    response = api.client().post("/messages", content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"


def test_unknown_connector_is_not_found(api: Api) -> None:
    response = api.client().post("/messages", json={"to": ["a@example.com"], "connector": "nope"})
    assert response.status_code == 404
    assert "there is no connector named 'nope'" in response.json()["detail"]


def test_list_filters_and_cursor_pagination(api: Api) -> None:
    client = api.client()
    ids = [
        client.post("/messages", json={"to": [f"user{i}@example.com"], "subject": f"n{i}"}).json()["id"]
        for i in range(5)
    ]
    seen: list[int] = []
    page = client.get("/messages", params={"limit": 2}).json()
    pages = 1
    while True:
        seen += [m["id"] for m in page["items"]]
        if page["next"] is None:
            assert page["next_url"] is None
            break
        assert "cursor=" in page["next_url"]
        page = client.get("/messages", params={"limit": 2, "cursor": page["next"]}).json()
        pages += 1
    assert seen == sorted(ids, reverse=True) and pages == 3
    only = client.get("/messages", params={"recipient": "user3@"}).json()["items"]
    assert [m["id"] for m in only] == [ids[3]]
    api.runtime.outbox.cancel(ids[0])
    cancelled = client.get("/messages", params={"status": "cancelled", "connector": "default"}).json()
    assert [m["id"] for m in cancelled["items"]] == [ids[0]]
    created = api.runtime.outbox.get(ids[2]).created_at
    after = client.get("/messages", params={"created_after": created.isoformat()}).json()["items"]
    assert {m["id"] for m in after} >= {ids[2], ids[3], ids[4]} and ids[0] not in {m["id"] for m in after}
    naive = created.replace(tzinfo=None).isoformat()
    before = client.get("/messages", params={"created_before": naive}).json()["items"]
    assert ids[2] not in {m["id"] for m in before} and ids[0] in {m["id"] for m in before}


def test_bad_cursor_and_filter_values_are_field_errors(api: Api) -> None:
    client = api.client()
    assert client.get("/messages", params={"cursor": "garbage"}).json()["errors"][0]["field"] == "cursor"
    assert client.get("/messages", params={"status": "lost"}).json()["errors"][0]["field"] == "status"
    assert client.get("/messages", params={"limit": 0}).json()["errors"][0]["field"] == "limit"
    assert client.get("/messages", params={"connector": "x"}).json()["items"] == []  # names no connector: nothing


def test_cancel_then_retry_then_conflicts(api: Api, admin: SandboxAdmin) -> None:
    client = api.client()
    message_id = client.post("/messages", json={"to": ["a@example.com"], "text": "x"}).json()["id"]
    cancelled = client.delete(f"/messages/{message_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.delete(f"/messages/{message_id}")
    assert again.status_code == 409
    assert again.json()["type"] == "https://m365relay.dev/problems/message-state-conflict"
    retried = client.post(f"/messages/{message_id}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert [e["kind"] for e in retried.json()["events"]] == ["queued", "cancelled", "retry"]
    drain(api.runtime)
    assert client.get(f"/messages/{message_id}").json()["status"] == "sent"
    assert len(admin.messages()) == 1
    sent_cancel = client.delete(f"/messages/{message_id}")
    assert sent_cancel.status_code == 409 and "sent" in sent_cancel.json()["detail"]
    assert client.post(f"/messages/{message_id}/retry").status_code == 409
    assert client.delete("/messages/424242").status_code == 404


def test_send_keys_change_only_their_own_messages(api: Api) -> None:
    mine = api.client("sender").post("/messages", json={"to": ["a@example.com"]}).json()["id"]
    other = Relay(runtime=api.runtime).enqueue(to=["b@example.com"], subject="from the library")
    assert api.client("sender").delete(f"/messages/{mine}").status_code == 200
    forbidden = api.client("sender").delete(f"/messages/{other}")
    assert forbidden.status_code == 403 and "admin" in forbidden.json()["detail"]
    assert api.client("admin").delete(f"/messages/{other}").status_code == 200


def test_raw_message_with_envelope(api: Api, admin: SandboxAdmin) -> None:
    msg = EmailMessage()
    msg["From"] = api.connector.user_name
    msg["To"] = "a@example.com, b@example.com"
    msg["Subject"] = "raw"
    msg.set_content("raw body")
    client = api.client()
    response = client.post(
        "/messages/raw",
        content=msg.as_bytes(),
        params={"to": ["b@example.com", "c@example.com"]},
        headers={"Content-Type": "message/rfc822"},
    )
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    assert api.runtime.outbox.get(message_id).recipients == ("b@example.com", "c@example.com")
    drain(api.runtime)
    captured = admin.only_message()
    assert captured["subject"] == "raw" and captured["to"] == ["b@example.com"]
    assert captured["bcc"] == ["c@example.com"]


def test_raw_refuses_other_media_types_empty_bodies_and_bad_envelopes(api: Api) -> None:
    client = api.client()
    wrong = client.post("/messages/raw", content=b"Subject: x\r\n\r\nx", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415
    assert wrong.json()["type"] == "https://m365relay.dev/problems/unsupported-media-type"
    empty = client.post("/messages/raw", content=b"", headers={"Content-Type": "message/rfc822"})
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "body"
    bad = client.post(
        "/messages/raw",
        content=b"Subject: x\r\n\r\nx",
        params={"to": ["ok@example.com", "bad address"]},
        headers={"Content-Type": "message/rfc822"},
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "to[1]"
    nobody = client.post("/messages/raw", content=b"Subject: x\r\n\r\nx", headers={"Content-Type": "message/rfc822"})
    assert nobody.status_code == 422 and nobody.json()["errors"][0]["field"] == "to"
    assert api.runtime.outbox.pending_count() == 0


def test_raw_idempotency(api: Api) -> None:
    client = api.client()
    data = b"To: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    headers = {"Content-Type": "message/rfc822", "Idempotency-Key": "raw-1"}
    first = client.post("/messages/raw", content=data, headers=headers)
    again = client.post("/messages/raw", content=data, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = client.post("/messages/raw", content=data + b"more", headers=headers)
    assert other.status_code == 409


def test_connectors_show_state_and_credential_expiry(api: Api, admin: SandboxAdmin) -> None:
    response = api.client("reader").get("/connectors")
    assert response.status_code == 200
    (item,) = response.json()["items"]
    assert item["name"] == "default" and item["state"] == "active" and item["state_reason"] is None
    assert item["credential"]["kind"] == "secret" and item["credential"]["days_left"] > 200
    assert item["expiry"]["level"] == "ok" and item["expiry"]["seconds_left"] > 0
    assert admin.demo["secret_value"] not in response.text


@pytest.fixture
def paused(api: Api) -> Api:
    from m365relay.errors import InvalidSecretError

    error = InvalidSecretError("AADSTS7000215: bad secret")
    api.runtime.connectors.pause(api.connector.id, error, api.runtime.clock.now())
    return api


def test_paused_connector_shows_reason_and_remedy(paused: Api) -> None:
    (item,) = paused.client("reader").get("/connectors").json()["items"]
    assert item["state"] == "paused" and "AADSTS7000215" in item["state_reason"]
    assert "Certificates & secrets" in item["state_remedy"] and item["state_error_kind"] == "InvalidSecretError"


@pytest.fixture
def api_on(database_url: str, tmp_path: Path, sandbox: SandboxServer) -> Iterator[Api]:
    """The API over each database backend (SQLite always; PostgreSQL when configured)."""
    runtime = Runtime(api_settings(tmp_path / "backend", database_url=database_url))
    try:
        yield from serve_api(runtime, runtime.connectors.save("default", connector_update(sandbox)))
    finally:
        runtime.close()


def test_the_api_on_each_database_backend(api_on: Api) -> None:
    client = api_on.client()
    body = {"to": ["Ann <ann@example.com>"], "subject": "backend", "text": "x"}
    first = client.post("/messages", json=body, headers={"Idempotency-Key": "k1"}).json()["id"]
    assert client.post("/messages", json=body, headers={"Idempotency-Key": "k1"}).json()["id"] == first
    assert client.post("/messages", json={**body, "text": "y"}, headers={"Idempotency-Key": "k1"}).status_code == 409
    second = client.post("/messages", json={"to": ["bob@example.com"], "text": "x"}).json()["id"]
    assert [m["id"] for m in client.get("/messages", params={"recipient": "ANN@"}).json()["items"]] == [first]
    page = client.get("/messages", params={"limit": 1}).json()
    assert [m["id"] for m in page["items"]] == [second]
    assert [m["id"] for m in client.get("/messages", params={"cursor": page["next"]}).json()["items"]] == [first]
    assert client.delete(f"/messages/{first}").json()["status"] == "cancelled"
    assert api_on.client(None).get("/messages").status_code == 401
    assert api_on.client("reader").get("/connectors").json()["items"][0]["state"] == "active"
