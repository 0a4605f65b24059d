"""The sandbox's Sent Items, message reads, read roles and the `drop` fault (PROTOCOL.md §12)."""

from __future__ import annotations

import ssl

import httpx
import pytest
from exactly_support import bearer, find_sent, mime, send_mime, token, wait_for

from m365relay.sandbox import SandboxServer

READ = ("Mail.Send", "Mail.ReadBasic.All")


@pytest.fixture
def mailbox(sandbox: SandboxServer) -> str:
    return str(sandbox.demo_info["mailbox"])


def grant(api: httpx.Client, server: SandboxServer, *roles: str) -> None:
    api.patch(f"/_sandbox/apps/{server.demo_info['client_id']}", json={"granted_roles": list(roles)}).raise_for_status()


def test_mime_send_is_filed_after_the_delay_with_its_message_id(
    sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str
) -> None:
    grant(sandbox_api, sandbox, *READ)
    sandbox_api.put("/_sandbox/sent-items", json={"delay_seconds": 30}).raise_for_status()
    access = token(sandbox_api, sandbox)
    message_id = "<o'brien.1@app.example>"  # a quote, doubled in the filter
    assert send_mime(sandbox_api, mailbox, access, mime(message_id)).status_code == 202
    first = find_sent(sandbox_api, mailbox, access, message_id)
    assert first.status_code == 200 and first.json()["value"] == [], "filed asynchronously: not there yet"
    assert sandbox_api.get("/_sandbox/sent-items").json()["not_yet_visible"] == 1
    sandbox_api.put("/_sandbox/clock", json={"advance_seconds": 31}).raise_for_status()
    found = find_sent(sandbox_api, mailbox, access, message_id).json()["value"]
    assert len(found) == 1
    item = found[0]
    assert item["internetMessageId"] == message_id
    assert set(item) == {"@odata.etag", "id", "internetMessageId", "sentDateTime"}  # $select
    assert item["sentDateTime"].endswith("Z")
    single = sandbox_api.get(f"/v1.0/users/{mailbox}/messages/{item['id']}", headers=bearer(access))
    assert single.status_code == 200
    got = single.json()
    assert got["internetMessageId"] == message_id and got["isDraft"] is False
    assert "body" not in got, "Mail.ReadBasic.All does not cover bodies"


def test_json_send_without_save_is_not_filed(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    grant(sandbox_api, sandbox, *READ)
    sandbox_api.put("/_sandbox/sent-items", json={"delay_seconds": 0}).raise_for_status()
    access = token(sandbox_api, sandbox)
    message = {"subject": "x", "body": {"contentType": "Text", "content": "y"},
               "toRecipients": [{"emailAddress": {"address": "a@example.com"}}]}  # fmt: skip
    for save in (False, True):
        response = sandbox_api.post(
            f"/v1.0/users/{mailbox}/sendMail",
            json={"message": message, "saveToSentItems": save},
            headers=bearer(access),
        )
        assert response.status_code == 202
    listed = sandbox_api.get(f"/v1.0/users/{mailbox}/mailFolders/SentItems/messages", headers=bearer(access)).json()[
        "value"
    ]
    assert len(listed) == 1, "only the send with saveToSentItems true is filed"
    assert listed[0]["internetMessageId"].startswith("<")


def test_reading_needs_a_read_role(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    access = token(sandbox_api, sandbox)  # the demo app has Mail.Send only
    response = find_sent(sandbox_api, mailbox, access, "<x@y>")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ErrorAccessDenied"
    missing = sandbox_api.get(f"/v1.0/users/{mailbox}/messages/AAMkADnothing", headers=bearer(access))
    assert missing.status_code == 403


def test_bad_filter_and_unknown_message(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    grant(sandbox_api, sandbox, "Mail.Send", "Mail.Read")
    access = token(sandbox_api, sandbox)
    url = f"/v1.0/users/{mailbox}/mailFolders/sentitems/messages"
    bad = sandbox_api.get(url, params={"$filter": "internetMessageId eq 'o'brien'"}, headers=bearer(access))
    assert bad.status_code == 400, "an undoubled quote ends the literal early"
    gone = sandbox_api.get(f"/v1.0/users/{mailbox}/messages/AAMkADnothing", headers=bearer(access))
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "ErrorItemNotFound"


def test_drop_fault_delivers_and_files_but_loses_the_answer(
    sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str, sandbox_ssl_context: ssl.SSLContext
) -> None:
    grant(sandbox_api, sandbox, *READ)
    sandbox_api.put("/_sandbox/sent-items", json={"delay_seconds": 0}).raise_for_status()
    access = token(sandbox_api, sandbox)
    sandbox_api.put("/_sandbox/faults", json={"sendMail": {"kind": "drop", "count": 1}}).raise_for_status()
    with (
        httpx.Client(base_url=sandbox.url, verify=sandbox_ssl_context, timeout=30) as fresh,
        pytest.raises(httpx.TransportError),
    ):
        send_mime(fresh, mailbox, access, mime("<dropped@app.example>"))
    assert [m["message_id"] for m in sandbox_api.get("/_sandbox/messages").json()] == ["<dropped@app.example>"]
    found = wait_for(lambda: find_sent(sandbox_api, mailbox, access, "<dropped@app.example>").json()["value"])
    assert len(found) == 1
    assert sandbox_api.get("/_sandbox/stats").json()["responses_dropped"] == {"sendMail": 1}


def test_reads_count_against_the_in_flight_limit(
    sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str, sandbox_ssl_context: ssl.SSLContext
) -> None:
    """Four slots per app and mailbox: a fifth concurrent read is throttled like a send."""
    import concurrent.futures

    grant(sandbox_api, sandbox, *READ)
    access = token(sandbox_api, sandbox)
    sandbox_api.put("/_sandbox/latency", json={"ms": 1500}).raise_for_status()
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            clients = [httpx.Client(base_url=sandbox.url, verify=sandbox_ssl_context, timeout=60) for _ in range(6)]
            futures = [pool.submit(find_sent, c, mailbox, access, "<x@y>") for c in clients]
            statuses = sorted(f.result().status_code for f in futures)
            for c in clients:
                c.close()
    finally:
        sandbox_api.put("/_sandbox/latency", json={"ms": 0})
    assert 429 in statuses and statuses.count(200) >= 1
    assert sandbox_api.get("/_sandbox/stats").json()["throttled_429"]["concurrency"] >= 1


def test_list_users_needs_user_read_all(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    access = token(sandbox_api, sandbox)
    denied = sandbox_api.get("/v1.0/users", params={"$top": "1"}, headers=bearer(access))
    assert denied.status_code == 403
    grant(sandbox_api, sandbox, "Mail.Send", "User.Read.All")
    access = token(sandbox_api, sandbox)
    users = sandbox_api.get("/v1.0/users", params={"$top": "1"}, headers=bearer(access)).json()["value"]
    assert [u["userPrincipalName"] for u in users] == [mailbox]


def test_consent_page_describes_read_roles(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    info = sandbox.demo_info
    redirect = "https://relay.example/admin/connectors/smtp"
    sandbox_api.patch(
        f"/_sandbox/apps/{info['client_id']}",
        json={"redirect_uris": [redirect], "requested_permissions": ["Mail.Send", "Mail.ReadBasic.All"]},
    ).raise_for_status()
    page = sandbox_api.get(
        f"/{info['tenant_id']}/v2.0/adminconsent",
        params={
            "client_id": info["client_id"],
            "redirect_uri": redirect,
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    assert page.status_code == 200
    assert "Mail.ReadBasic.All" in page.text and "no bodies" in page.text
