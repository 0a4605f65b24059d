"""The sandbox files NDRs the way Exchange Online does, and serves the Inbox by delta query and `$value`."""

from __future__ import annotations

import email
import email.policy
from typing import Any

import httpx
import pytest
from sandbox_support import bearer, graph_error, mime, send_mime, token

from m365relay.mailbox import reports
from m365relay.sandbox import SandboxServer

DOMAIN = "contoso.onmicrosoft.com"


@pytest.fixture
def mailbox(sandbox: SandboxServer) -> str:
    return str(sandbox.demo_info["mailbox"])


def grant(api: httpx.Client, sandbox: SandboxServer, *roles: str) -> None:
    client_id = sandbox.demo_info["client_id"]
    api.patch(f"/_sandbox/apps/{client_id}", json={"granted_roles": list(roles)}).raise_for_status()


def settings(api: httpx.Client, **values: Any) -> None:
    api.put("/_sandbox/inbox/settings", json=values).raise_for_status()


def delta(api: httpx.Client, url: str, access: str, **headers: str) -> httpx.Response:
    return api.get(url, headers=bearer(access, **headers))


def read_all(api: httpx.Client, mailbox: str, access: str, link: str | None = None) -> tuple[list[dict[str, Any]], str]:
    url = link or f"/v1.0/users/{mailbox}/mailFolders/inbox/messages/delta"
    items: list[dict[str, Any]] = []
    while True:
        response = delta(api, url, access, Prefer="odata.maxpagesize=1")
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["value"]
        if "@odata.nextLink" in body:
            assert "@odata.deltaLink" not in body
            url = body["@odata.nextLink"]
            continue
        return items, body["@odata.deltaLink"]


def value(api: httpx.Client, mailbox: str, access: str, item_id: str) -> bytes:
    response = api.get(f"/v1.0/users/{mailbox}/messages/{item_id}/$value", headers=bearer(access))
    assert response.status_code == 200, response.text
    return response.content


def test_reading_the_inbox_needs_mail_read(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    access = token(sandbox_api, sandbox)
    response = delta(sandbox_api, f"/v1.0/users/{mailbox}/mailFolders/inbox/messages/delta", access)
    assert response.status_code == 403 and graph_error(response)["code"] == "ErrorAccessDenied"
    response = sandbox_api.get(f"/v1.0/users/{mailbox}/messages/x/$value", headers=bearer(access))
    assert response.status_code == 403 and graph_error(response)["code"] == "ErrorAccessDenied"


def test_unknown_and_invalid_recipients_bounce_like_exchange(
    sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str
) -> None:
    settings(sandbox_api, ndr_delay_seconds=0)
    grant(sandbox_api, sandbox, "Mail.Send", "Mail.Read")
    access = token(sandbox_api, sandbox)
    sent_ids = {}
    for to in (f"nobody@{DOMAIN}", "x@bad.invalid", "fine@example.com"):
        raw = mime(mailbox, to=to, subject=f"For {to}")
        sent_ids[to] = email.message_from_bytes(raw)["Message-ID"]
        assert send_mime(sandbox_api, mailbox, access, raw).status_code == 202
    items, link = read_all(sandbox_api, mailbox, access)
    assert len(items) == 2  # the deliverable one produced nothing
    assert all(i["subject"].startswith("Undeliverable: For ") for i in items)
    seen = {}
    for item in items:
        raw = value(sandbox_api, mailbox, access, item["id"])
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["From"].addresses[0].display_name == "Microsoft Outlook"
        assert parsed["From"].addresses[0].username.startswith("MicrosoftExchange")
        assert "X-MS-Exchange-Message-Is-Ndr" in parsed
        assert parsed.get_content_type() == "multipart/report"
        assert [p.get_content_type() for p in parsed.iter_parts()] == [
            "multipart/alternative",
            "message/delivery-status",
            "text/rfc822-headers",
        ]
        report = reports.classify(raw)
        assert report.kind == reports.BOUNCE and report.source == "exchange"
        seen[report.recipients[0].address] = (report.recipients[0].status, report.original_message_id)
    assert seen == {
        f"nobody@{DOMAIN}": ("5.1.10", sent_ids[f"nobody@{DOMAIN}"]),
        "x@bad.invalid": ("5.1.1", sent_ids["x@bad.invalid"]),
    }
    # The deltaLink returns only what arrived since.
    assert read_all(sandbox_api, mailbox, access, link)[0] == []
    send_mime(sandbox_api, mailbox, access, mime(mailbox, to="y@also.invalid")).raise_for_status()
    again, _ = read_all(sandbox_api, mailbox, access, link)
    assert [i["subject"] for i in again] == ["Undeliverable: MIME test"]


def test_reports_arrive_after_the_configured_delay(
    sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str
) -> None:
    settings(sandbox_api, ndr_delay_seconds=600)
    grant(sandbox_api, sandbox, "Mail.Send", "Mail.ReadWrite")  # ReadWrite includes Read
    access = token(sandbox_api, sandbox)
    send_mime(sandbox_api, mailbox, access, mime(mailbox, to="x@bad.invalid")).raise_for_status()
    items, link = read_all(sandbox_api, mailbox, access)
    assert items == []
    sandbox_api.put("/_sandbox/clock", json={"offset_seconds": 601}).raise_for_status()
    assert len(read_all(sandbox_api, mailbox, access, link)[0]) == 1


def test_seeded_outcomes(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    outcomes = {
        "full@example.com": "bounce 5.2.2",
        "slow@example.com": "delay then bounce",
        "ooo@example.com": "auto-reply",
    }
    settings(sandbox_api, ndr_delay_seconds=0, final_after_seconds=1800, outcomes=outcomes)
    grant(sandbox_api, sandbox, "Mail.Send", "Mail.Read")
    access = token(sandbox_api, sandbox)
    for to in outcomes:
        send_mime(sandbox_api, mailbox, access, mime(mailbox, to=to, subject=to)).raise_for_status()
    items, link = read_all(sandbox_api, mailbox, access)
    kinds = {}
    for item in items:
        report = reports.classify(value(sandbox_api, mailbox, access, item["id"]))
        kinds[item["subject"]] = (report.kind, report.recipients[0].status if report.recipients else None)
    assert kinds == {
        "Undeliverable: full@example.com": (reports.BOUNCE, "5.2.2"),
        "Delivery delayed: slow@example.com": (reports.DELAYED, "4.4.7"),
        "Automatic reply: ooo@example.com": (reports.AUTO_REPLY, None),
    }
    sandbox_api.put("/_sandbox/clock", json={"offset_seconds": 1801}).raise_for_status()
    final, _ = read_all(sandbox_api, mailbox, access, link)
    assert [i["subject"] for i in final] == ["Undeliverable: slow@example.com"]
    report = reports.classify(value(sandbox_api, mailbox, access, final[0]["id"]))
    assert report.kind == reports.BOUNCE and report.recipients[0].action == "failed"


def test_bad_settings_change_nothing(sandbox_api: httpx.Client, sandbox: SandboxServer) -> None:
    response = sandbox_api.put("/_sandbox/inbox/settings", json={"outcomes": {"a@b.c": "explode"}})
    assert response.status_code == 400 and "explode" in response.json()["error"]
    assert sandbox_api.get("/_sandbox/inbox/settings").json()["outcomes"] == {}


def test_a_bad_delta_token_asks_for_a_full_sync(
    sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str
) -> None:
    grant(sandbox_api, sandbox, "Mail.Send", "Mail.Read")
    access = token(sandbox_api, sandbox)
    url = f"/v1.0/users/{mailbox}/mailFolders/inbox/messages/delta?$deltatoken=garbage"
    response = delta(sandbox_api, url, access)
    assert response.status_code == 410 and graph_error(response)["code"] == "SyncStateNotFound"


def test_viewer_shows_the_inbox(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    settings(sandbox_api, ndr_delay_seconds=0)
    access = token(sandbox_api, sandbox)
    send_mime(sandbox_api, mailbox, access, mime(mailbox, to="x@bad.invalid", subject="Viewer")).raise_for_status()
    page = sandbox_api.get("/inbox")
    assert page.status_code == 200 and "Undeliverable: Viewer" in page.text and mailbox in page.text
