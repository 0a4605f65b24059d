"""Drafts, small attachments and upload sessions end to end (PROTOCOL.md §5, large attachments)."""

from __future__ import annotations

import base64
import email
import email.policy
import os
from typing import Any

import httpx
import pytest
from sandbox_support import bearer, graph_error, token

from m365relay.sandbox import SandboxServer

CHUNK = 4 * 1024 * 1024


@pytest.fixture
def mailbox(sandbox: SandboxServer) -> str:
    return str(sandbox.demo_info["mailbox"])


@pytest.fixture
def rw_token(sandbox: SandboxServer, sandbox_api: httpx.Client) -> str:
    sandbox_api.patch(
        f"/_sandbox/apps/{sandbox.demo_info['client_id']}", json={"granted_roles": ["Mail.Send", "Mail.ReadWrite"]}
    )
    return token(sandbox_api, sandbox)


def create_draft(api: httpx.Client, mailbox: str, access_token: str) -> dict[str, Any]:
    response = api.post(
        f"/v1.0/users/{mailbox}/messages",
        json={
            "subject": "Big report",
            "body": {"contentType": "Text", "content": "See attached."},
            "toRecipients": [{"emailAddress": {"address": "alice@example.com"}}],
            "bccRecipients": [{"emailAddress": {"address": "audit@example.com"}}],
        },
        headers=bearer(access_token),
    )
    assert response.status_code == 201, response.text
    draft: dict[str, Any] = response.json()
    assert draft["isDraft"] is True
    return draft


def start_session(api: httpx.Client, mailbox: str, access_token: str, draft_id: str, size: int) -> httpx.Response:
    return api.post(
        f"/v1.0/users/{mailbox}/messages/{draft_id}/attachments/createUploadSession",
        json={
            "AttachmentItem": {
                "attachmentType": "file",
                "name": "report.bin",
                "size": size,
                "contentType": "application/octet-stream",
            }
        },
        headers=bearer(access_token),
    )


def put_chunk(client: httpx.Client, url: str, data: bytes, start: int, total: int) -> httpx.Response:
    return client.put(
        url,
        content=data,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}",
        },
    )


def test_upload_session_end_to_end(
    sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str, rw_token: str
) -> None:
    draft = create_draft(sandbox_api, mailbox, rw_token)
    small = sandbox_api.post(
        f"/v1.0/users/{mailbox}/messages/{draft['id']}/attachments",
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "note.txt",
            "contentType": "text/plain",
            "contentBytes": base64.b64encode(b"small").decode(),
        },
        headers=bearer(rw_token),
    )
    assert small.status_code == 201
    assert small.json()["name"] == "note.txt"
    payload = os.urandom(10 * 1024 * 1024)
    session = start_session(sandbox_api, mailbox, rw_token, draft["id"], len(payload))
    assert session.status_code == 201, session.text
    body = session.json()
    assert body["nextExpectedRanges"] == ["0-"]
    assert body["expirationDateTime"]
    url = body["uploadUrl"]
    assert url.startswith(sandbox.url)
    offsets = list(range(0, len(payload), CHUNK))
    for start in offsets:
        response = put_chunk(sandbox_api, url, payload[start : start + CHUNK], start, len(payload))
        if start != offsets[-1]:
            assert response.status_code == 200, response.text
            assert response.json()["NextExpectedRanges"] == [str(start + CHUNK)]
        else:
            assert response.status_code == 201, response.text
            assert response.headers["location"]
    sent = sandbox_api.post(f"/v1.0/users/{mailbox}/messages/{draft['id']}/send", headers=bearer(rw_token))
    assert sent.status_code == 202
    [summary] = sandbox_api.get("/_sandbox/messages").json()
    assert summary["subject"] == "Big report"
    assert summary["bcc"] == ["audit@example.com"]
    sizes = {a["name"]: a["size"] for a in summary["attachments"]}
    assert sizes == {"note.txt": 5, "report.bin": len(payload)}
    raw = sandbox_api.get(f"/_sandbox/messages/{summary['id']}/raw").content
    assert b"audit@example.com" not in raw
    assert base64.b64encode(payload[:57]) in raw
    stats = sandbox_api.get("/_sandbox/stats").json()
    assert stats["createDraft"] == 1 and stats["createUploadSession"] == 1
    assert stats["uploadChunk"] == 3 and stats["sendDraft"] == 1


def test_upload_rules(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str, rw_token: str) -> None:
    draft = create_draft(sandbox_api, mailbox, rw_token)
    total = 3 * 1024 * 1024
    url = start_session(sandbox_api, mailbox, rw_token, draft["id"], total).json()["uploadUrl"]
    data = b"x" * (1024 * 1024)
    with_token = sandbox_api.put(
        url, content=data, headers={"Content-Range": f"bytes 0-{len(data) - 1}/{total}", **bearer(rw_token)}
    )
    assert with_token.status_code == 401
    assert put_chunk(sandbox_api, url, data, 0, total).status_code == 200
    overlap = put_chunk(sandbox_api, url, data, 0, total)
    assert overlap.status_code == 416
    gap = put_chunk(sandbox_api, url, data, 2 * len(data), total)
    assert gap.status_code == 416
    assert put_chunk(sandbox_api, url, data, len(data), total).status_code == 200
    assert sandbox_api.delete(url).status_code == 204
    assert put_chunk(sandbox_api, url, data, 2 * len(data), total).status_code == 404
    guessed = url.split("?")[0] + "?authtoken=guess"
    assert put_chunk(sandbox_api, guessed, data, 0, total).status_code == 404


def test_upload_session_size_bounds(sandbox_api: httpx.Client, mailbox: str, rw_token: str) -> None:
    draft = create_draft(sandbox_api, mailbox, rw_token)
    too_big = start_session(sandbox_api, mailbox, rw_token, draft["id"], 150 * 1024 * 1024 + 1)
    assert too_big.status_code == 400
    too_small = start_session(sandbox_api, mailbox, rw_token, draft["id"], 1000)
    assert too_small.status_code == 400
    assert graph_error(too_small)["code"] == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"


def test_drafts_need_mail_readwrite(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    response = sandbox_api.post(
        f"/v1.0/users/{mailbox}/messages", json={"subject": "x"}, headers=bearer(token(sandbox_api, sandbox))
    )
    assert response.status_code == 403
    assert graph_error(response)["code"] == "ErrorAccessDenied"


def test_draft_send_checks_mailbox_size(sandbox_api: httpx.Client, mailbox: str, rw_token: str) -> None:
    draft = create_draft(sandbox_api, mailbox, rw_token)
    total = 3 * 1024 * 1024
    url = start_session(sandbox_api, mailbox, rw_token, draft["id"], total).json()["uploadUrl"]
    assert put_chunk(sandbox_api, url, b"y" * total, 0, total).status_code == 201
    sandbox_api.put(f"/_sandbox/mailboxes/{mailbox}", json={"max_message_size": 2 * 1024 * 1024})
    response = sandbox_api.post(f"/v1.0/users/{mailbox}/messages/{draft['id']}/send", headers=bearer(rw_token))
    assert response.status_code == 400
    assert graph_error(response)["code"] == "ErrorMessageSizeExceeded"
    unknown = sandbox_api.post(f"/v1.0/users/{mailbox}/messages/AAMkADnope/send", headers=bearer(rw_token))
    assert unknown.status_code == 404


def test_a_draft_created_from_mime_keeps_its_header_fields_and_gets_its_uploads(
    sandbox_api: httpx.Client, mailbox: str, rw_token: str
) -> None:
    """POST messages with Content-Type text/plain and base64 MIME creates a draft (user-post-messages);
    sent with an uploaded attachment, the message keeps its own Message-ID, Date, threading and X- fields."""
    head = (
        f"From: Reports <{mailbox}>\r\nTo: alice@example.com\r\nSubject: from MIME\r\n"
        "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <mime-draft@example.com>\r\n"
        "In-Reply-To: <earlier@example.com>\r\nX-Ticket: 4711\r\n"
    ).encode()
    mime = head + b"Content-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
    bad = sandbox_api.post(
        f"/v1.0/users/{mailbox}/messages", content=b"not base64!",
        headers={**bearer(rw_token), "Content-Type": "text/plain"},
    )  # fmt: skip
    assert bad.status_code == 400 and graph_error(bad)["code"] == "ErrorMimeContentInvalidBase64String"
    created = sandbox_api.post(
        f"/v1.0/users/{mailbox}/messages", content=base64.b64encode(mime),
        headers={**bearer(rw_token), "Content-Type": "text/plain"},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    draft = created.json()
    assert draft["isDraft"] is True and draft["subject"] == "from MIME"
    data = os.urandom(CHUNK + 1000)
    session = start_session(sandbox_api, mailbox, rw_token, draft["id"], len(data))
    url = session.json()["uploadUrl"]
    assert put_chunk(sandbox_api, url, data[:CHUNK], 0, len(data)).status_code == 200
    assert put_chunk(sandbox_api, url, data[CHUNK:], CHUNK, len(data)).status_code == 201
    sent = sandbox_api.post(f"/v1.0/users/{mailbox}/messages/{draft['id']}/send", headers=bearer(rw_token))
    assert sent.status_code == 202, sent.text
    [captured] = sandbox_api.get("/_sandbox/messages").json()
    raw = sandbox_api.get(f"/_sandbox/messages/{captured['id']}/raw").content
    for line in head.split(b"\r\n")[:-1]:
        assert line + b"\r\n" in raw, line
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    files = {p.get_filename(): p.get_payload(decode=True) for p in parsed.walk() if p.get_filename()}
    assert files == {"report.bin": data}
    assert "See attached." in str(parsed.get_body(("plain",)).get_content())  # type: ignore[union-attr]
