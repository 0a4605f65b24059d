"""Graph sendMail (JSON and MIME) round trips and each Graph error of PROTOCOL.md §6."""

from __future__ import annotations

import base64
import email
import email.policy
import uuid
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import httpx
import jwt
import pytest
from sandbox_support import (
    bearer,
    claims_of,
    graph_error,
    make_certificate,
    mime,
    send_json,
    send_mime,
    simple_message,
    token,
)

from m365relay.sandbox import SandboxServer


@pytest.fixture
def access_token(sandbox: SandboxServer, sandbox_api: httpx.Client) -> str:
    return token(sandbox_api, sandbox)


@pytest.fixture
def mailbox(sandbox: SandboxServer) -> str:
    return str(sandbox.demo_info["mailbox"])


def captured(api: httpx.Client) -> list[dict[str, Any]]:
    response = api.get("/_sandbox/messages")
    assert response.status_code == 200
    messages: list[dict[str, Any]] = response.json()
    return messages


def raw_of(api: httpx.Client, message_id: str) -> EmailMessage:
    response = api.get(f"/_sandbox/messages/{message_id}/raw")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("message/rfc822")
    parsed = email.message_from_bytes(response.content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = graph_error(response)
    assert error["code"] == code
    inner = error["innerError"]
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] == response.headers["client-request-id"]
    assert inner["date"]
    return error


def test_json_round_trip(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    logo = b"\x89PNG fake image"
    payload = {
        "message": {
            "subject": "Invoice <b>42</b>",
            "body": {"contentType": "HTML", "content": '<p>See <img src="cid:logo1"></p>'},
            "toRecipients": [{"emailAddress": {"address": "alice@example.com", "name": "Alice A."}}],
            "ccRecipients": [{"emailAddress": {"address": "carol@example.com"}}],
            "bccRecipients": [{"emailAddress": {"address": "bob@example.com"}}],
            "replyTo": [{"emailAddress": {"address": "help@contoso.com"}}],
            "importance": "high",
            "internetMessageHeaders": [{"name": "X-Ticket", "value": "T-42"}],
            "attachments": [
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "name": "a.txt",
                    "contentType": "text/plain",
                    "contentBytes": base64.b64encode(b"hello").decode(),
                },
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "name": "logo.png",
                    "contentType": "image/png",
                    "contentBytes": base64.b64encode(logo).decode(),
                    "isInline": True,
                    "contentId": "logo1",
                },
            ],
        },
        "saveToSentItems": False,
    }
    client_request_id = str(uuid.uuid4())
    response = sandbox_api.post(
        f"/v1.0/users/{mailbox}/sendMail",
        json=payload,
        headers=bearer(access_token, **{"client-request-id": client_request_id}),
    )
    assert response.status_code == 202
    assert response.content == b""
    assert response.headers["client-request-id"] == client_request_id
    request_id = response.headers["request-id"]
    [summary] = captured(sandbox_api)
    assert summary["mailbox"] == mailbox
    assert summary["from"] == mailbox
    assert summary["to"] == ["alice@example.com"]
    assert summary["cc"] == ["carol@example.com"]
    assert summary["bcc"] == ["bob@example.com"]
    assert summary["subject"] == "Invoice <b>42</b>"
    assert summary["save_to_sent_items"] is False
    assert summary["request_id"] == request_id
    names = {a["name"]: a for a in summary["attachments"]}
    assert names["logo.png"]["is_inline"] is True and names["logo.png"]["content_id"] == "logo1"
    assert names["a.txt"]["size"] == 5
    parsed = raw_of(sandbox_api, summary["id"])
    assert parsed["Bcc"] is None
    assert parsed["From"] == mailbox or mailbox in str(parsed["From"])
    assert "Alice A." in str(parsed["To"])
    assert parsed["Reply-To"] == "help@contoso.com"
    assert parsed["X-Ticket"] == "T-42"
    assert parsed["Importance"] == "high"
    assert parsed["Message-ID"] == summary["message_id"]
    html = parsed.get_body(("html",))
    assert html is not None and "cid:logo1" in html.get_content()
    detail = sandbox_api.get(f"/_sandbox/messages/{summary['id']}").json()
    assert "cid:logo1" in detail["html"]
    assert any(name == "X-Ticket" for name, _ in detail["headers"])


def test_mime_round_trip(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    message = EmailMessage()
    message["From"] = f"No Reply <{mailbox}>"
    message["To"] = "Alice <alice@example.com>, bob@example.com"
    message["Cc"] = "carol@example.com"
    message["Bcc"] = "secret@example.com"
    message["Subject"] = "Grüße"
    message["Message-ID"] = "<abc123@app.example>"
    message["Date"] = formatdate()
    message.set_content("Plain body\n")
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="r.pdf")
    raw = message.as_bytes()
    response = send_mime(sandbox_api, mailbox, access_token, raw)
    assert response.status_code == 202, response.text
    [summary] = captured(sandbox_api)
    assert summary["to"] == ["alice@example.com", "bob@example.com"]
    assert summary["bcc"] == ["secret@example.com"]
    assert summary["subject"] == "Grüße"
    assert summary["message_id"] == "<abc123@app.example>"
    assert summary["save_to_sent_items"] is True
    assert summary["attachments"][0]["name"] == "r.pdf"
    delivered = sandbox_api.get(f"/_sandbox/messages/{summary['id']}/raw").content
    assert b"secret@example.com" not in delivered
    assert delivered == raw.replace(b"Bcc: secret@example.com\n", b"")
    found = sandbox_api.get("/_sandbox/messages", params={"message_id": "abc123@app.example"}).json()
    assert [m["id"] for m in found] == [summary["id"]]


def test_mime_without_from_gets_the_mailbox(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    raw = b"To: alice@example.com\r\nSubject: no from\r\n\r\nhi\r\n"
    assert send_mime(sandbox_api, mailbox, access_token, raw).status_code == 202
    [summary] = captured(sandbox_api)
    parsed = raw_of(sandbox_api, summary["id"])
    assert parsed["From"] == mailbox
    assert parsed["Message-ID"] and parsed["Date"]


def test_user_by_object_id_and_case(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    state = sandbox_api.get("/_sandbox/state").json()
    object_id = state["mailboxes"][0]["id"]
    assert send_json(sandbox_api, object_id, access_token, simple_message()).status_code == 202
    assert send_json(sandbox_api, mailbox.upper(), access_token, simple_message()).status_code == 202


def test_graph_segments_are_case_insensitive(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    response = sandbox_api.post(f"/v1.0/Users/{mailbox}/SENDMAIL", json=simple_message(), headers=bearer(access_token))
    assert response.status_code == 202


def test_send_as(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    other = "sales@contoso.onmicrosoft.com"
    denied = send_json(
        sandbox_api, mailbox, access_token, simple_message(**{"from": {"emailAddress": {"address": other}}})
    )
    assert_envelope(denied, 403, "ErrorSendAsDenied")
    assert_envelope(send_mime(sandbox_api, mailbox, access_token, mime(other)), 403, "ErrorSendAsDenied")
    sandbox_api.put(f"/_sandbox/mailboxes/{mailbox}", json={"send_as": [other]})
    ok = send_json(sandbox_api, mailbox, access_token, simple_message(**{"from": {"emailAddress": {"address": other}}}))
    assert ok.status_code == 202
    assert send_mime(sandbox_api, mailbox, access_token, mime(other)).status_code == 202
    assert {m["from"] for m in captured(sandbox_api)} == {other}


# -- authentication and authorization ----------------------------------------------------------------


def test_missing_malformed_and_forged_tokens(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    path = f"/v1.0/users/{mailbox}/sendMail"
    none = sandbox_api.post(path, json=simple_message())
    assert_envelope(none, 401, "InvalidAuthenticationToken")
    assert none.headers["www-authenticate"].startswith("Bearer ")
    malformed = sandbox_api.post(path, json=simple_message(), headers=bearer("garbage"))
    assert "CompactToken parsing failed" in assert_envelope(malformed, 401, "InvalidAuthenticationToken")["message"]
    good = token(sandbox_api, sandbox)
    forged = jwt.encode(claims_of(good), make_certificate().key, algorithm="RS256")  # right claims, wrong key
    response = sandbox_api.post(path, json=simple_message(), headers=bearer(forged))
    assert assert_envelope(response, 401, "InvalidAuthenticationToken")["message"] == "Access token validation failure."


def test_expired_token(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    sandbox_api.put("/_sandbox/clock", json={"offset_seconds": 3600})
    error = assert_envelope(
        send_json(sandbox_api, mailbox, access_token, simple_message()), 401, "InvalidAuthenticationToken"
    )
    assert error["message"] == "Access token has expired or is not yet valid."


def test_wrong_audience(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    outlook = token(sandbox_api, sandbox, scope="https://outlook.office365.com/.default")
    error = assert_envelope(
        send_json(sandbox_api, mailbox, outlook, simple_message()), 401, "InvalidAuthenticationToken"
    )
    assert error["message"] == "Access token validation failure."
    graph = token(sandbox_api, sandbox, scope="https://graph.microsoft.com/.default")
    assert send_json(sandbox_api, mailbox, graph, simple_message()).status_code == 202


def test_no_consent(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    sandbox_api.patch(f"/_sandbox/apps/{sandbox.demo_info['client_id']}", json={"granted_roles": []})
    response = send_json(sandbox_api, mailbox, token(sandbox_api, sandbox), simple_message())
    assert_envelope(response, 401, "NoPermissionsInAccessToken")
    assert response.headers["www-authenticate"].startswith("Bearer ")


def test_roles_without_mail_send(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    sandbox_api.patch(f"/_sandbox/apps/{sandbox.demo_info['client_id']}", json={"granted_roles": ["User.Read.All"]})
    error = assert_envelope(
        send_json(sandbox_api, mailbox, token(sandbox_api, sandbox), simple_message()), 403, "ErrorAccessDenied"
    )
    assert error["message"] == "Access is denied. Check credentials and try again."


def test_access_policy(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    client_id = sandbox.demo_info["client_id"]
    sandbox_api.put(f"/_sandbox/access-policies/{client_id}", json={"allowed_mailboxes": ["other@contoso.com"]})
    error = assert_envelope(send_json(sandbox_api, mailbox, access_token, simple_message()), 403, "ErrorAccessDenied")
    assert "[RAOP]" in error["message"]
    sandbox_api.put(f"/_sandbox/access-policies/{client_id}", json={"allowed_mailboxes": [mailbox]})
    assert send_json(sandbox_api, mailbox, access_token, simple_message()).status_code == 202
    assert sandbox_api.delete(f"/_sandbox/access-policies/{client_id}").status_code == 204


def test_unknown_user_and_unlicensed(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    error = assert_envelope(
        send_json(sandbox_api, "ghost@contoso.onmicrosoft.com", access_token, simple_message()), 404, "ErrorInvalidUser"
    )
    assert error["message"] == "The requested user 'ghost@contoso.onmicrosoft.com' is invalid."
    sandbox_api.put(f"/_sandbox/mailboxes/{mailbox}", json={"licensed": False})
    assert_envelope(send_json(sandbox_api, mailbox, access_token, simple_message()), 404, "MailboxNotEnabledForRESTAPI")


def test_me_is_invalid_for_app_tokens(sandbox_api: httpx.Client, access_token: str) -> None:
    response = sandbox_api.post("/v1.0/me/sendMail", json=simple_message(), headers=bearer(access_token))
    error = assert_envelope(response, 400, "BadRequest")
    assert "/me request is only valid with delegated authentication flow" in error["message"]


# -- validation ------------------------------------------------------------------------------------


def test_bad_base64(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    response = sandbox_api.post(
        f"/v1.0/users/{mailbox}/sendMail",
        content=b"!!!not base64",
        headers=bearer(access_token, **{"Content-Type": "text/plain"}),
    )
    error = assert_envelope(response, 400, "ErrorMimeContentInvalidBase64String")
    assert error["message"] == "Invalid base64 string for MIME content."


@pytest.mark.parametrize("to", [[], ["not-an-address"]])
def test_invalid_recipients(sandbox_api: httpx.Client, mailbox: str, access_token: str, to: list[str]) -> None:
    assert_envelope(
        send_json(
            sandbox_api,
            mailbox,
            access_token,
            simple_message(to=to or None) if to else {"message": {"subject": "x", "toRecipients": []}},
        ),
        400,
        "ErrorInvalidRecipients",
    )


def test_mime_without_recipients(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    raw = b"From: x@contoso.onmicrosoft.com\r\nSubject: nobody\r\n\r\nhi\r\n"
    assert_envelope(send_mime(sandbox_api, mailbox, access_token, raw), 400, "ErrorInvalidRecipients")


def test_too_many_recipients(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    to = [f"user{i}@example.com" for i in range(501)]
    assert_envelope(send_json(sandbox_api, mailbox, access_token, simple_message(to=to)), 400, "ErrorTooManyRecipients")
    assert send_json(sandbox_api, mailbox, access_token, simple_message(to=to[:500])).status_code == 202


def test_no_header_injection_through_json(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    payload = simple_message(subject="Hi\r\nBcc: victim@example.com")
    assert send_json(sandbox_api, mailbox, access_token, payload).status_code == 202
    [summary] = captured(sandbox_api)
    parsed = raw_of(sandbox_api, summary["id"])
    assert parsed["Bcc"] is None
    assert "victim@example.com" in parsed["Subject"]


def test_header_names_must_start_with_x(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    payload = simple_message(internetMessageHeaders=[{"name": "Custom", "value": "v"}])
    error = assert_envelope(send_json(sandbox_api, mailbox, access_token, payload), 400, "InvalidInternetMessageHeader")
    assert "'x-' or 'X-'" in error["message"]


def test_message_too_large_for_mailbox(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    sandbox_api.put(f"/_sandbox/mailboxes/{mailbox}", json={"max_message_size": 1000})
    payload = simple_message(body={"contentType": "Text", "content": "x" * 2000})
    assert_envelope(send_json(sandbox_api, mailbox, access_token, payload), 400, "ErrorMessageSizeExceeded")
    assert captured(sandbox_api) == []


def test_request_over_4mb(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    body = b"A" * (4 * 1024 * 1024 + 4)
    response = sandbox_api.post(
        f"/v1.0/users/{mailbox}/sendMail", content=body, headers=bearer(access_token, **{"Content-Type": "text/plain"})
    )
    assert response.status_code == 413
    assert response.headers["request-id"]


def test_bad_json(sandbox_api: httpx.Client, mailbox: str, access_token: str) -> None:
    response = sandbox_api.post(
        f"/v1.0/users/{mailbox}/sendMail",
        content=b"{nope",
        headers=bearer(access_token, **{"Content-Type": "application/json"}),
    )
    assert_envelope(response, 400, "BadRequest")


def test_unknown_graph_path(sandbox_api: httpx.Client, access_token: str) -> None:
    response = sandbox_api.get("/v1.0/nothing/here", headers=bearer(access_token))
    assert_envelope(response, 400, "BadRequest")
