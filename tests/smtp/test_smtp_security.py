"""Issue 13, items 1 and 5, on raw sockets: a bare LF never ends a command, and one client cannot hold the
relay with connections, NOOPs, command floods or a dripped message. No timed assertions: each test waits
for the relay to act, with a generous bound on how long the client keeps trying."""

from __future__ import annotations

import select
import socket
import time

from smtp_support import PASSWORD, USER, RawClient, Relay, StartRelay, assert_reply, message, plain_auth

from m365relay.ingress import smtp_replies as R
from m365relay.ingress.smtp_replies import Reply

NEED_MAIL = Reply(503, "Error:", "need MAIL command")  # aiosmtpd's own reply
GIVE_UP_AFTER = 60.0  # seconds a test keeps a client going before it declares the relay never acted


def session(raw: RawClient) -> None:
    assert raw.reply()[0] == 220
    assert raw.command("EHLO client.example")[0] == 250
    assert_reply(*raw.command(f"AUTH PLAIN {plain_auth(USER, PASSWORD)}"), R.AUTH_SUCCEEDED)


def closed(raw: RawClient) -> bool:
    try:
        return raw.file.readline() == b""
    except OSError:
        return True


# -- item 1: a command line ends with CRLF only (RFC 5321 §2.3.8) ------------------------------------------


def test_a_bare_lf_does_not_smuggle_a_second_command(relay: Relay) -> None:
    with relay.raw() as raw:
        session(raw)
        raw.send(b"MAIL FROM:<app@example.com>\nRCPT TO:<evil@evil.example>\r\n")
        assert_reply(*raw.reply(), R.COMMAND_BARE_LINE_END)  # one reply for the one line: no 250 for either
        assert_reply(*raw.command("RCPT TO:<someone@example.com>"), NEED_MAIL)  # the MAIL did not happen
        raw.send(b"NOOP\nRSET\r\n")  # a command without an argument check is refused the same way
        assert_reply(*raw.reply(), R.COMMAND_BARE_LINE_END)
        raw.send(b"MAIL FROM:<app@example.com>\rRCPT TO:<evil@evil.example>\r\n")  # and a bare CR
        assert_reply(*raw.reply(), R.COMMAND_BARE_LINE_END)
        assert_reply(*raw.command("MAIL FROM:<app@example.com>"), R.SENDER_OK)  # the session goes on
        assert_reply(*raw.command("RCPT TO:<someone@example.com>"), R.RECIPIENT_OK)
        assert raw.command("DATA")[0] == 354
        raw.send(message() + b".\r\n")
        assert_reply(*raw.reply(), R.QUEUED)
    [queued] = relay.queued()
    assert queued.recipients == ("someone@example.com",)


# -- item 5: connection caps ----------------------------------------------------------------------------


def connect(relay: Relay) -> RawClient:
    return RawClient(socket.create_connection((relay.host, relay.port), timeout=30))


def test_connections_per_client_are_capped_with_421(start_relay: StartRelay) -> None:
    relay = start_relay(smtp_max_connections_per_client=3)
    clients = [connect(relay) for _ in range(3)]
    try:
        for client in clients:
            assert client.reply()[0] == 220
        with connect(relay) as extra:
            code, text = extra.reply()
            assert_reply(code, text, R.TOO_MANY_CONNECTIONS)
            assert "from your address" in text
            assert closed(extra)
        with clients.pop() as leaving:
            leaving.command("QUIT")
        assert eventually_greeted(relay)  # a slot freed by QUIT is given to the next client
    finally:
        for client in clients:
            client.close()


def test_connections_in_total_are_capped_with_421(start_relay: StartRelay) -> None:
    relay = start_relay(smtp_max_connections=2, smtp_max_connections_per_client=0)
    clients = [connect(relay) for _ in range(2)]
    try:
        for client in clients:
            assert client.reply()[0] == 220
        with connect(relay) as extra:
            code, text = extra.reply()
            assert_reply(code, text, R.TOO_MANY_CONNECTIONS)
            assert "on this relay" in text
    finally:
        for client in clients:
            client.close()


def eventually_greeted(relay: Relay) -> bool:
    give_up = time.monotonic() + GIVE_UP_AFTER
    while time.monotonic() < give_up:
        with connect(relay) as client:
            if client.reply()[0] == 220:
                return True
        time.sleep(0.1)
    return False


# -- item 5: the idle timer, command floods, dripped data -------------------------------------------------


def test_noop_stops_restarting_the_command_timeout(start_relay: StartRelay) -> None:
    relay = start_relay(smtp_command_timeout=1.0, smtp_idle_command_resets=3)
    with relay.raw() as raw:
        session(raw)
        give_up = time.monotonic() + GIVE_UP_AFTER
        reply = None
        while time.monotonic() < give_up:  # today every NOOP restarts the 1 s timer, so this never ends
            raw.send(b"NOOP\r\n")
            reply = raw.reply()
            if reply[0] != 250:
                break
            time.sleep(0.2)
        assert reply is not None
        assert_reply(*reply, R.TIMED_OUT)
        assert closed(raw)


def test_commands_without_mail_are_capped(start_relay: StartRelay) -> None:
    relay = start_relay(smtp_max_commands_without_mail=6)
    with relay.raw() as raw:
        session(raw)  # EHLO and AUTH: 2 commands
        for _ in range(4):
            assert raw.command("RSET")[0] == 250
        assert_reply(*raw.command("RSET"), R.TOO_MANY_COMMANDS)
        assert closed(raw)
    with relay.raw() as raw:  # a message sent starts the count again; RCPT is not counted
        session(raw)
        assert_reply(*raw.command("MAIL FROM:<app@example.com>"), R.SENDER_OK)
        for i in range(10):
            assert_reply(*raw.command(f"RCPT TO:<r{i}@example.com>"), R.RECIPIENT_OK)
        assert raw.command("DATA")[0] == 354
        raw.send(message() + b".\r\n")
        assert_reply(*raw.reply(), R.QUEUED)
        for _ in range(6):
            assert raw.command("RSET")[0] == 250
        assert_reply(*raw.command("RSET"), R.TOO_MANY_COMMANDS)


def test_a_dripped_message_is_cut_off_with_421(start_relay: StartRelay) -> None:
    relay = start_relay(smtp_command_timeout=1.0, smtp_min_data_rate=50_000)
    with relay.raw() as raw:
        session(raw)
        assert_reply(*raw.command("MAIL FROM:<app@example.com>"), R.SENDER_OK)
        assert_reply(*raw.command("RCPT TO:<someone@example.com>"), R.RECIPIENT_OK)
        assert raw.command("DATA")[0] == 354
        raw.send(b"From: app@example.com\r\nTo: someone@example.com\r\nSubject: drip\r\n\r\n")
        give_up = time.monotonic() + GIVE_UP_AFTER
        # A line every 20 ms never goes silent for 1 s, but is far below 50 kB/s. Stop once the relay speaks.
        while time.monotonic() < give_up and not select.select([raw.sock], [], [], 0.02)[0]:
            raw.send(b"drip\r\n")
        code, text = raw.reply()
        assert_reply(code, text, R.DATA_TOO_SLOW)
    assert relay.queued() == []
    with relay.raw() as raw:  # a message sent at full speed is not affected
        session(raw)
        assert_reply(*raw.command("MAIL FROM:<app@example.com>"), R.SENDER_OK)
        assert_reply(*raw.command("RCPT TO:<someone@example.com>"), R.RECIPIENT_OK)
        assert raw.command("DATA")[0] == 354
        raw.send(message(body="line\r\n" * 2000) + b".\r\n")
        assert_reply(*raw.reply(), R.QUEUED)
