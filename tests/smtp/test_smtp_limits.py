"""Bad input gets a clear, specific reply and changes nothing: size, recipients, line length, malformed
commands, header injection, malformed header blocks — and clients that pipeline get every reply in order."""

from __future__ import annotations

import smtplib

import pytest
from smtp_support import PASSWORD, USER, RawClient, Relay, StartRelay, assert_reply, message, plain_auth

from m365relay.ingress import smtp_replies as R
from m365relay.ingress.smtp_replies import Reply

# aiosmtpd's own replies (the relay keeps them): named here so the tests read like the others.
MALFORMED_ADDRESS = Reply(553, "5.1.3", "Error: malformed address")
NESTED_MAIL = Reply(503, "Error:", "nested MAIL command")


def session(raw: RawClient) -> None:
    """Greeting, EHLO and AUTH PLAIN on a raw connection (loopback may AUTH without TLS)."""
    assert raw.reply()[0] == 220
    assert raw.command("EHLO client.example")[0] == 250
    assert_reply(*raw.command(f"AUTH PLAIN {plain_auth(USER, PASSWORD)}"), R.AUTH_SUCCEEDED)


def transaction(raw: RawClient, data: bytes, recipients: tuple[str, ...] = ("someone@example.com",)) -> tuple[int, str]:
    """MAIL, RCPT, DATA and the message (already dot-stuffed, ending in CRLF); the reply to the final dot."""
    assert_reply(*raw.command("MAIL FROM:<app@example.com>"), R.SENDER_OK)
    for rcpt in recipients:
        assert_reply(*raw.command(f"RCPT TO:<{rcpt}>"), R.RECIPIENT_OK)
    assert raw.command("DATA")[0] == 354
    raw.send(data + b".\r\n")
    return raw.reply()


def test_oversize_is_refused_with_552_534(start_relay: StartRelay) -> None:
    relay = start_relay(smtp_max_message_bytes=10_000)
    big = message(body=("y" * 70 + "\r\n") * 200)
    client = relay.smtp()
    with pytest.raises(smtplib.SMTPSenderRefused) as declared:  # smtplib declares SIZE= in MAIL FROM
        client.sendmail("app@example.com", ["someone@example.com"], big)
    assert_reply(declared.value.smtp_code, declared.value.smtp_error, R.MESSAGE_TOO_BIG)
    client.quit()
    with relay.raw() as raw:  # a client that does not declare the size finds out after the final dot
        session(raw)
        code, text = transaction(raw, big)
        assert_reply(code, text, R.MESSAGE_TOO_BIG)
        assert "at most 10000 bytes" in text
        assert_reply(*transaction(raw, message()), R.QUEUED)  # the session goes on
    assert len(relay.queued()) == 1


def test_more_than_500_recipients_get_452_453(relay: Relay) -> None:
    recipients = [f"r{i}@example.com" for i in range(501)]
    client = relay.smtp()
    refused = client.sendmail("app@example.com", recipients, message(to="list@example.com"))
    assert list(refused) == ["r500@example.com"]
    code, reply = refused["r500@example.com"]
    assert_reply(code, reply, R.TOO_MANY_RECIPIENTS)
    client.quit()
    [queued] = relay.queued()
    assert len(queued.recipients) == 500, "the first 500 are accepted; the client sends the rest separately"


def test_repeated_rcpt_counts_once(relay: Relay) -> None:
    with relay.raw() as raw:
        session(raw)
        reply = transaction(raw, message(), ("a@example.com", "A@example.com", "a@example.com"))
        assert_reply(*reply, R.QUEUED)
    assert relay.queued()[0].recipients == ("a@example.com",)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"MAIL FROM:<app@example.com>\rRCPT TO:<victim@example.com>", R.COMMAND_CONTROL_CHARACTERS),
        (b"MAIL FROM:<app@example.com\x00>", R.COMMAND_CONTROL_CHARACTERS),
        (b"EHLO client\rexample", R.COMMAND_CONTROL_CHARACTERS),
        (b"MAIL FROM:<app@>", MALFORMED_ADDRESS),
        (b"MAIL FROM:<not an address>", R.SENDER_NOT_FULL_ADDRESS),
        (b"DATA", R.BAD_SEQUENCE_NEED_RCPT),
        (b"AUTH CRAM-MD5", R.AUTH_MECHANISM_UNKNOWN),
        (b"AUTH", R.AUTH_SYNTAX),
        (b"AUTH PLAIN a b", R.AUTH_SYNTAX),
    ],
)
def test_malformed_commands_get_specific_replies(relay: Relay, line: bytes, expected: Reply) -> None:
    with relay.raw() as raw:
        raw.reply()
        raw.command("EHLO client.example")
        raw.send(line + b"\r\n")
        assert_reply(*raw.reply(), expected)
        assert raw.command("NOOP")[0] == 250, "the session continues"


def test_bad_rcpt_and_auth_replies(relay: Relay) -> None:
    with relay.raw() as raw:
        raw.reply()
        assert_reply(*raw.command("AUTH PLAIN x"), R.SEND_EHLO_FIRST)
        raw.command("EHLO client.example")
        assert_reply(*raw.command("AUTH PLAIN !!!not-base64"), R.AUTH_BAD_BASE64)
        assert_reply(*raw.command("AUTH PLAIN " + plain_auth(USER, PASSWORD)[:-4] + "AAAA"), R.AUTH_MALFORMED)
        assert raw.command("AUTH LOGIN")[1] == R.AUTH_CHALLENGE_USERNAME[4:]
        assert_reply(*raw.command("*"), R.AUTH_ABORTED)
        assert_reply(*raw.command(f"AUTH PLAIN {plain_auth(USER, PASSWORD)}"), R.AUTH_SUCCEEDED)
        assert_reply(*raw.command(f"AUTH PLAIN {plain_auth(USER, PASSWORD)}"), R.AUTH_ALREADY_DONE)
        raw.command("MAIL FROM:<app@example.com>")
        assert_reply(*raw.command("RCPT TO:<postmaster>"), R.RECIPIENT_NOT_FULL_ADDRESS)
        assert_reply(*raw.command("MAIL FROM:<other@example.com>"), NESTED_MAIL)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"From: app@example.com\nBcc: victim@example.com\r\nSubject: x\r\n\r\nbody\r\n", R.HEADER_BARE_NEWLINE),
        (b"From: app@example.com\r\nSubject: x\rBcc: victim@example.com\r\n\r\nbody\r\n", R.HEADER_BARE_NEWLINE),
        (b"Hello, this is not a header\r\n\r\nbody\r\n", R.HEADER_MALFORMED),
        (b" From: app@example.com\r\n\r\nbody\r\n", R.HEADER_MALFORMED),
        (b"From: a@example.com\r\nFrom: b@example.com\r\n\r\nbody\r\n", R.HEADER_REPEATED),
        (b"From: app@example.com\r\nSubject: caf\xe9\r\n\r\nbody\r\n", R.HEADER_NOT_UTF8),
        (b"From: undisclosed\r\n\r\nbody\r\n", R.FROM_UNREADABLE),
        (b"", R.MESSAGE_EMPTY),
        (b"From: app@example.com\r\n\r\n" + b"x" * 1200 + b"\r\n", R.LINE_TOO_LONG),
        (b"From: app@example.com\r\n\r\n" + b"x" * 200_000 + b"\r\n", R.LINE_TOO_LONG),
    ],
    ids=["bare-LF", "bare-CR", "not-a-header", "leading-space", "two-From", "latin-1", "From-no-address",
         "empty", "long-line", "huge-line"],
)  # fmt: skip
def test_malformed_messages_get_specific_replies(relay: Relay, data: bytes, expected: Reply) -> None:
    with relay.raw() as raw:
        session(raw)
        assert_reply(*transaction(raw, data), expected)
        assert_reply(*transaction(raw, message()), R.QUEUED)
    assert len(relay.queued()) == 1, "the bad message changed nothing"


def test_only_crlf_dot_crlf_ends_the_data(relay: Relay) -> None:
    """SMTP smuggling: a bare-LF "end of data" must not let a second, forged message in."""
    smuggled = (
        b"From: app@example.com\r\nSubject: one\r\n\r\nfirst part\n.\nMAIL FROM:<app@example.com>\r\n"
        b"RCPT TO:<victim@example.com>\r\nDATA\r\nFrom: ceo@example.com\r\nSubject: forged\r\n\r\nsecond\r\n"
    )
    with relay.raw() as raw:
        session(raw)
        assert_reply(*transaction(raw, smuggled), R.QUEUED)
        assert raw.command("QUIT")[0] == 221
    [queued] = relay.queued()
    assert queued.recipients == ("someone@example.com",) and queued.subject == "one"


def test_pipelined_commands_are_answered_in_order(relay: Relay) -> None:
    with relay.raw() as raw:
        assert raw.reply()[0] == 220
        raw.send(f"EHLO client.example\r\nAUTH PLAIN {plain_auth(USER, PASSWORD)}\r\n".encode())
        assert "PIPELINING" in raw.reply()[1]
        assert_reply(*raw.reply(), R.AUTH_SUCCEEDED)
        envelope = b"MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        raw.send(envelope)
        for expected in (R.SENDER_OK, R.RECIPIENT_OK, R.RECIPIENT_OK):
            assert_reply(*raw.reply(), expected)
        assert raw.reply()[0] == 354
        raw.send(message(subject="first") + b".\r\n" + envelope)  # RFC 2920: the next group follows the dot
        assert_reply(*raw.reply(), R.QUEUED)
        for expected in (R.SENDER_OK, R.RECIPIENT_OK, R.RECIPIENT_OK):
            assert_reply(*raw.reply(), expected)
        assert raw.reply()[0] == 354
        raw.send(message(subject="second") + b".\r\nQUIT\r\n")
        assert_reply(*raw.reply(), R.QUEUED)
        assert raw.reply()[0] == 221
    assert sorted(q.subject or "" for q in relay.queued()) == ["first", "second"]
    assert all(q.recipients == ("a@example.com", "b@example.com") for q in relay.queued())
