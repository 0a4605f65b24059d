"""Issue 12's evidence, one test each (they fail on the relay before the fix): byte-faithful header lines,
From rewrites that keep the display name, delivery = envelope, permanent refusals at acceptance, parity of
the HTTP raw path with SMTP; and issue 13 #8 (several addresses in one JSON recipient entry)."""

from __future__ import annotations

import base64
import email
import email.policy
import os
import smtplib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_support import Api, serve_api
from compare import differences, header_fields
from smtp_support import Relay

from m365relay.addresses import parse_list
from m365relay.graph.acceptance import SenderRules, apply_from_policy
from m365relay.graph.mime import OutgoingMessage
from m365relay.ingress import smtp_replies as R
from support import SandboxAdmin

MAILBOX = "noreply@contoso.com"
LONG_SUBJECT = (
    "Thread-Topic: " + " ".join(["a-rather-long-subject-word"] * 6) + "\r\n\tcontinued on a tab-folded line\r\n"
)
FAITHFUL_HEAD = (
    "Subject: =?utf-8?q?caf=C3=A9_and_a_long_subject_that_goes_on_and_on_and_on_and_on?=\r\n"
    " =?utf-8?q?_still_going?=\r\n"
    "Thread-Index: AdkQ2x3v0R5c8a7kQ3mOqZcT1iKq2wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
    "X-MS-TNEF-Correlator: <00000000AB9C5A21E1D6BC4C9E2F2F4E1B3A9D5E0700F2A5C6C1B8C7B84FB1B2F1F2A3B4C5D6E7F8>\r\n"
    'Content-Type: application/pkcs7-mime; smime-type=enveloped-data;\r\n name="smime.p7m"\r\n'
    "Content-Transfer-Encoding: base64\r\n"
)


def _message(head: str, body: str = "Hello.\r\n") -> bytes:
    return (head + "\r\n" + body).encode("utf-8")


@pytest.fixture
def api(relay: Relay) -> Iterator[Api]:
    yield from serve_api(relay.runtime, relay.connector)


@pytest.fixture
def relay(start_relay: Any) -> Relay:
    relay: Relay = start_relay()
    return relay


def _captured(admin: SandboxAdmin) -> tuple[dict[str, Any], bytes]:
    found = admin.only_message()
    return found, admin.client.get(f"/_sandbox/messages/{found['id']}/raw").content


def _recipients(found: dict[str, Any]) -> list[str]:
    return sorted([*found["to"], *found["cc"], *found["bcc"]])


# -- 1. header lines go out as they came ------------------------------------------------------------


def test_header_block_is_kept_byte_for_byte() -> None:
    raw = _message(f"From: {MAILBOX}\r\nTo: a@example.com\r\n{LONG_SUBJECT}{FAITHFUL_HEAD}", "QUJD\r\n")
    assert OutgoingMessage.from_bytes(raw).to_bytes() == raw


def test_long_folded_and_encoded_headers_arrive_unchanged(relay: Relay, admin: SandboxAdmin) -> None:
    sent = _message(f"From: {MAILBOX}\r\nTo: a@example.com\r\n{LONG_SUBJECT}{FAITHFUL_HEAD}", "QUJD\r\n")
    relay.smtp().sendmail(MAILBOX, ["a@example.com"], sent)
    relay.deliver()
    found, received = _captured(admin)
    assert differences(sent, received, envelope=["a@example.com"], delivered=_recipients(found)) == []


# -- 2. delivery = envelope ---------------------------------------------------------------------------


def test_eve_gets_it_and_frank_does_not(relay: Relay, admin: SandboxAdmin) -> None:
    sent = _message(f"From: {MAILBOX}\r\nTo: boss@example.com\r\nCC: eve@example.com <frank@example.com>\r\n")
    relay.smtp().sendmail(MAILBOX, ["eve@example.com"], sent)
    relay.deliver()
    found, received = _captured(admin)
    assert _recipients(found) == ["eve@example.com"]
    assert b"frank@example.com" not in received


@pytest.mark.parametrize("entry", ["To: XX", "Bcc: Array", "To: <matmail>", "Bcc: a@b@c"])
def test_header_entries_that_are_not_addresses_are_removed(relay: Relay, admin: SandboxAdmin, entry: str) -> None:
    sent = _message(f"From: {MAILBOX}\r\n{entry}\r\nSubject: x\r\n")
    relay.smtp().sendmail(MAILBOX, ["ann@example.com"], sent)
    relay.deliver()
    found, _ = _captured(admin)  # delivered: no ErrorInvalidRecipients after the 250
    assert _recipients(found) == ["ann@example.com"]


# -- 3. the From rewrite ------------------------------------------------------------------------------

REWRITE = SenderRules(MAILBOX, (), "rewrite", "relay user 'app'")


def _rewritten(from_value: str) -> OutgoingMessage:
    message = OutgoingMessage.from_bytes(_message(f"From: {from_value}\r\nTo: a@example.com\r\n"))
    apply_from_policy(message, REWRITE)
    return message


def _read_by_python(message: OutgoingMessage) -> tuple[str, str]:
    parsed = email.message_from_bytes(message.to_bytes(), policy=email.policy.default)
    address = parsed["From"].addresses[0]
    return address.display_name, address.addr_spec


@pytest.mark.parametrize(
    ("original", "shown"),
    [
        ("=?utf-8?q?Doe=2C_John_=28Accounts_Payable=29?= <jdoe@example.com>", "Doe, John (Accounts Payable)"),
        ("=?utf-8?q?alice=40example=2Ecom?= <x@example.com>", "alice@example.com"),
        ('John "Johnny" Doe <jd@example.com>', 'John "Johnny" Doe'),
        ('"Ann (Buchhaltung)" <ann@example.de>', "Ann (Buchhaltung)"),
        ("=?iso-8859-1?q?J=FCrgen_M=FCller?= <jm@example.de>", "Jürgen Müller"),
    ],
)
def test_the_rewritten_from_keeps_the_name_and_reads_as_the_mailbox(original: str, shown: str) -> None:
    message = _rewritten(original)
    [entry] = parse_list(message.values("From")[0])
    assert entry.mailbox is not None and entry.mailbox.addr_spec == MAILBOX
    assert entry.mailbox.display_name == shown
    assert _read_by_python(message) == (shown, MAILBOX)
    assert '"=?' not in message.values("From")[0], "no encoded-word inside a quoted string (RFC 2047 §5)"
    reply_to = next(f.raw for f in message.fields if f.name == "Reply-To")
    assert reply_to == f"Reply-To: {original}\r\n".encode(), "the original From goes to Reply-To verbatim"


def test_a_comma_in_an_encoded_name_is_delivered_not_denied(relay: Relay, admin: SandboxAdmin) -> None:
    sent = _message("From: =?utf-8?q?Doe=2C_John?= <jdoe@example.com>\r\nTo: a@example.com\r\n")
    relay.smtp().sendmail("jdoe@example.com", ["a@example.com"], sent)
    relay.deliver()
    found, _ = _captured(admin)  # before: 403 ErrorSendAsDenied after the client got 250
    assert found["from"].lower() == relay.connector.user_name.lower()


def test_a_missing_from_becomes_the_mailbox_and_date_and_message_id_are_added(relay: Relay) -> None:
    relay.smtp().sendmail(MAILBOX, ["a@example.com"], _message("To: a@example.com\r\nSubject: no From\r\n"))
    [record] = relay.queued()
    assert record.message_id and record.message_id.startswith("<")
    stored = relay.runtime.outbox.headers(record.id)
    fields = dict(header_fields(stored + b"\r\n"))
    assert fields["from"] == f"From: {relay.connector.user_name}\r\n".encode()
    assert fields["message-id"].strip() == f"Message-ID: {record.message_id}".encode()
    assert "date" in fields


# -- 4. permanent problems are answered at acceptance, permanently ------------------------------------


def _refusal(relay: Relay, data: bytes, rcpt: str = "a@example.com") -> tuple[int, str]:
    client = relay.smtp()
    try:
        client.sendmail(MAILBOX, [rcpt], data)
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error.decode()
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = exc.recipients[rcpt]
        return code, text.decode()
    return 250, "accepted"


def test_a_line_feed_inside_an_encoded_word_is_refused_permanently(relay: Relay) -> None:
    head = f"From: {MAILBOX}\r\nTo: =?UTF-8?Q?Ann=0A_Evil?= <ann@example.com>\r\n"
    code, text = _refusal(relay, _message(head))
    assert code == 554 and "encoded-word" in text, (code, text)  # before: 451 4.3.0 for ever


def test_a_bare_lf_message_over_1000_bytes_gets_the_bare_lf_reply(relay: Relay) -> None:
    data = (f"From: {MAILBOX}\nTo: a@example.com\nSubject: lf\n\n" + "line of text\n" * 100).encode()
    with relay.raw() as raw:
        raw.reply()  # the greeting
        raw.command("EHLO client.example")
        raw.command("AUTH PLAIN " + base64.b64encode(b"\0app\0correct horse battery staple").decode())
        raw.command(f"MAIL FROM:<{MAILBOX}>")
        raw.command("RCPT TO:<a@example.com>")
        raw.command("DATA")
        raw.send(data + b"\r\n.\r\n")
        code, text = raw.reply()
    assert (code, text.split(" ", 1)[0]) == (R.HEADER_BARE_NEWLINE.code, R.HEADER_BARE_NEWLINE.status)
    assert text.startswith(R.HEADER_BARE_NEWLINE.status + " Bare CR or LF"), text


def test_user_at_localhost_is_refused_on_both_paths(relay: Relay, api: Api) -> None:
    code, text = _refusal(relay, _message(f"From: {MAILBOX}\r\n"), rcpt="user@localhost")
    assert code == 553 and "fully qualified" in text
    answer = api.client().post(
        "/messages/raw", params={"to": "user@localhost"}, content=_message(f"From: {MAILBOX}\r\n"),
        headers={"Content-Type": "message/rfc822"},
    )  # fmt: skip
    assert answer.status_code == 422 and "fully qualified" in answer.text


# -- 5. the HTTP raw path refuses what SMTP refuses ---------------------------------------------------


def _raw(api: Api, data: bytes) -> httpx.Response:
    return api.client().post(
        "/messages/raw", params={"to": "a@example.com"}, content=data, headers={"Content-Type": "message/rfc822"}
    )


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (b"From: app@example.com\r\nSubject: caf\xe9\r\n", b"neither ASCII nor UTF-8"),
        (b"From: Undisclosed\r\nSubject: x\r\n", b"holds no valid address"),
        (b"From: app@example.com\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nDate: Tue, 2 Jan 2024 00:00:00 +0000\r\n",
         b"Date appears 2 times"),
        (b"From: app@example.com\r\nSubject: x\r\n\r\n" + b"y" * 1200, b"longer than 998 characters"),
    ],
    ids=["latin-1-header", "from-without-address", "duplicate-date", "long-body-line"],
)  # fmt: skip
def test_http_raw_refuses_with_422_what_smtp_refuses(relay: Relay, api: Api, head: bytes, says: bytes) -> None:
    answer = _raw(api, head + b"\r\nbody\r\n")
    assert answer.status_code == 422, answer.text  # before: 500, or 202 and then failed for ever
    assert says in answer.content
    code, _ = _refusal(relay, head + b"\r\nbody\r\n")
    assert 550 <= code < 560
    assert relay.queued() == []


# -- issue 13 #8 ----------------------------------------------------------------------------------------


def test_two_addresses_in_one_json_recipient_entry_are_refused_naming_the_entry(api: Api) -> None:
    answer = api.client().post("/messages", json={"to": ["ann@example.com", "a@x.com, b@y.com"], "text": "hi"})
    assert answer.status_code == 422, answer.text  # before: 202, and only a@x.com got it
    problem = answer.json()
    assert any(e["field"] == "to[1]" for e in problem.get("errors") or [problem]), problem


# -- 6. the upload path (> 4 MB) keeps the message's identity -----------------------------------------


def test_a_large_message_keeps_its_identity_through_the_upload_path(start_relay: Any, admin: SandboxAdmin) -> None:
    relay = start_relay(smtp_from_policy="enforce")
    admin.grant("Mail.Send", "Mail.ReadWrite")
    mailbox = relay.connector.user_name
    big = base64.encodebytes(os.urandom(6 * 1024 * 1024)).replace(b"\n", b"\r\n")
    identity = (
        f"From: Alerts Team <{mailbox}>\r\n"
        "To: ann@example.com\r\n"
        "Reply-To: Help Desk <help@example.com>\r\n"
        "Subject: large, with identity\r\n"
        "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        "Message-ID: <large-1@example.com>\r\n"
        "In-Reply-To: <earlier@example.com>\r\n"
        "References: <first@example.com> <earlier@example.com>\r\n"
        "X-Ticket: 4711\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode()
    sent = identity + (
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the file.\r\n"
        b'--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="big.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + big + b"--b1--\r\n"
    )
    relay.smtp().sendmail(mailbox, ["ann@example.com"], sent)
    relay.deliver()
    [record] = relay.queued()
    assert record.status == "sent", record.last_error
    found, received = _captured(admin)
    assert found["source"] == "draft"
    got = dict(header_fields(received))
    for name, value in header_fields(identity):
        if name not in ("mime-version",):
            assert got.get(name) == value, f"{name}: sent {value!r}, received {got.get(name)!r}"
    parsed = email.message_from_bytes(received, policy=email.policy.default)
    files = {p.get_filename(): p.get_payload(decode=True) for p in parsed.walk() if p.get_filename()}
    assert files["big.bin"] == base64.decodebytes(big)
