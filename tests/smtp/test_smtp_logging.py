"""AUTH credentials never reach the logs, at any level — including aiosmtpd's own DEBUG log of every line,
and lines a confused client sends as commands after its AUTH was refused."""

from __future__ import annotations

import base64
import logging

import pytest
from smtp_support import PASSWORD, USER, StartRelay, assert_reply, plain_auth

from m365relay.ingress import smtp_replies as R
from m365relay.ingress.smtp_logging import censor_line


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_credentials_never_appear_in_logs(start_relay: StartRelay, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mail.log")
    relay = start_relay(log_level="debug")
    wrong = "not the password 12345"
    with relay.raw() as raw:
        raw.reply()
        # AUTH before EHLO is refused; a careless client pipelines its LOGIN answers anyway (they arrive as
        # "commands" and are logged as such by aiosmtpd).
        raw.send(f"AUTH LOGIN\r\n{b64(USER)}\r\n{b64(wrong)}\r\n".encode())
        assert_reply(*raw.reply(), R.SEND_EHLO_FIRST)
        raw.reply()
        raw.reply()
        raw.command("EHLO client.example")
        assert raw.command("AUTH LOGIN")[0] == 334
        assert raw.command(b64(USER))[0] == 334
        assert_reply(*raw.command(b64(wrong)), R.AUTH_INVALID)
        assert raw.command(f"AUTH LOGIN {b64(USER)}") == (334, R.AUTH_CHALLENGE_PASSWORD[4:])
        assert_reply(*raw.command(b64(PASSWORD)), R.AUTH_SUCCEEDED)
    client = relay.smtp(tls=False, login=None)
    client.login(USER, PASSWORD)  # smtplib: AUTH PLAIN with an initial response
    client.docmd(PASSWORD)  # a password typed as a command, in the clear
    client.quit()

    secrets = {PASSWORD, wrong, b64(PASSWORD), b64(wrong), plain_auth(USER, PASSWORD), plain_auth(USER, wrong)}
    secrets |= {s.upper() for s in secrets}  # aiosmtpd logs unknown commands upper-cased
    logged = [record.getMessage() for record in caplog.records]
    assert any(record.name == "mail.log" and record.levelno == logging.DEBUG for record in caplog.records)
    assert any("withheld" in line for line in logged), "the stray credential lines were seen and censored"
    assert any("AUTH PLAIN ********" in line for line in logged)
    for line in logged:
        for secret in secrets:
            assert secret not in line, f"credential in the log: {line!r}"


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        (b"AUTH PLAIN AGFwcABzZWNyZXQ=\r\n", b"AUTH PLAIN ********"),
        (b"auth login dXNlcg==", b"auth login ********"),
        (b"AUTH LOGIN", b"AUTH LOGIN"),
        (b"MAIL FROM:<app@example.com>", b"MAIL FROM:<app@example.com>"),
        (b"c2VjcmV0", b"<8 bytes withheld>"),
        ("C2VJCMV0", "<8 bytes withheld>"),
    ],
)
def test_censor_line(line: bytes | str, kept: bytes | str) -> None:
    assert censor_line(line) == kept
