"""The SMTP relay end to end: smtplib over real sockets → SmtpServer → outbox → dispatcher → the sandbox's
mailbox. Who may relay, how AUTH is protected, what the From policy does, and envelope = delivery."""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

import pytest
from smtp_support import PASSWORD, USER, Relay, StartRelay, assert_reply, message, plain_auth

from m365relay.ingress import smtp_replies as R
from support import SandboxAdmin


def login_with(client: smtplib.SMTP, mechanism: str, user: str = USER, password: str = PASSWORD) -> tuple[int, bytes]:
    """Exactly one AUTH attempt with one mechanism (smtplib's login() would try every advertised one)."""
    client.user, client.password = user, password
    method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    try:
        return client.auth(mechanism, method, initial_response_ok=mechanism == "PLAIN")
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code, exc.smtp_error


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_over_starttls_delivers_to_the_sandbox_mailbox(relay: Relay, admin: SandboxAdmin, mechanism: str) -> None:
    client = relay.smtp(login=None)
    assert_reply(*login_with(client, mechanism), R.AUTH_SUCCEEDED)
    client.mail("app@example.com")
    client.rcpt("someone@example.com")
    code, reply = client.data(message(subject=f"via {mechanism}"))
    assert_reply(code, reply, R.QUEUED)
    client.quit()

    [queued] = relay.queued()
    assert f"queued as {queued.id}" in reply.decode()
    assert (queued.source, queued.source_detail, queued.recipients) == ("smtp", USER, ("someone@example.com",))
    relay.deliver()
    captured = admin.only_message()
    assert captured["subject"] == f"via {mechanism}"
    assert captured["to"] == ["someone@example.com"]
    raw = admin.raw(captured["id"])
    assert raw["From"] == relay.connector.user_name, "rewrite (the default): the mailbox sends"
    assert raw["Reply-To"] == "app@example.com", "the application's From becomes Reply-To"
    received = " ".join(str(raw["Received"]).split())
    assert received.startswith("from client.example ([127.0.0.1]) by ")
    assert " with ESMTPSA id " in received and "for <someone@example.com>;" in received


def test_ehlo_announces_the_extensions(relay: Relay) -> None:
    client = relay.smtp(tls=False, login=None)
    for extension in ("size", "8bitmime", "smtputf8", "pipelining", "starttls", "auth"):
        assert client.has_extn(extension), extension
    assert client.esmtp_features["size"] == str(relay.runtime.settings.smtp_max_message_bytes)
    assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
    client.starttls(context=relay.tls_context())
    client.ehlo("client.example")
    assert not client.has_extn("starttls") and client.has_extn("auth")
    assert_reply(*client.docmd("STARTTLS"), R.TLS_ALREADY_ACTIVE)
    client.quit()


def test_relaying_without_auth_is_refused_at_rcpt(relay: Relay) -> None:
    client = relay.smtp(login=None)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        client.sendmail("app@example.com", ["someone@example.com"], message())
    [(code, reply)] = refused.value.recipients.values()
    assert_reply(code, reply, R.AUTH_REQUIRED)
    client.quit()
    assert relay.queued() == []


def test_an_allowlisted_network_relays_without_auth(start_relay: StartRelay, admin: SandboxAdmin) -> None:
    relay = start_relay(smtp_allowed_networks=["127.0.0.0/8"])
    client = relay.smtp(tls=False, login=None)
    assert client.sendmail("app@example.com", ["someone@example.com"], message()) == {}
    client.quit()
    [queued] = relay.queued()
    assert queued.source_detail == "127.0.0.1"
    relay.deliver()
    assert admin.only_message()["to"] == ["someone@example.com"]


def test_auth_before_starttls_is_refused_when_loopback_plain_is_off(start_relay: StartRelay) -> None:
    relay = start_relay(smtp_auth_allow_loopback_plain=False)
    client = relay.smtp(tls=False, login=None)
    assert not client.has_extn("auth"), "AUTH is not offered before STARTTLS"
    assert_reply(*client.docmd("AUTH", f"PLAIN {plain_auth(USER, PASSWORD)}"), R.AUTH_ENCRYPTION_REQUIRED)
    client.starttls(context=relay.tls_context())
    client.ehlo("client.example")
    assert_reply(*login_with(client, "PLAIN"), R.AUTH_SUCCEEDED)
    client.quit()


def test_loopback_may_auth_without_tls_by_default(relay: Relay) -> None:
    client = relay.smtp(tls=False, login=None)
    assert_reply(*login_with(client, "LOGIN"), R.AUTH_SUCCEEDED)
    client.quit()


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (the route to a TEST-NET address; no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_auth_without_tls_is_refused_off_loopback(start_relay: StartRelay) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    relay = start_relay(host=address)
    client = relay.smtp(tls=False, login=None)
    assert not client.has_extn("auth")
    assert_reply(*client.docmd("AUTH", f"PLAIN {plain_auth(USER, PASSWORD)}"), R.AUTH_ENCRYPTION_REQUIRED)
    unverified = ssl.create_default_context()
    unverified.check_hostname = False  # the self-signed certificate names loopback, not this address
    unverified.verify_mode = ssl.CERT_NONE
    client.starttls(context=unverified)
    client.ehlo("client.example")
    assert_reply(*login_with(client, "PLAIN"), R.AUTH_SUCCEEDED)
    client.quit()


def test_wrong_passwords_are_rate_limited_per_client_address(start_relay: StartRelay) -> None:
    relay = start_relay(smtp_auth_failures_per_minute=3)
    client = relay.smtp(login=None)
    for _ in range(3):
        assert_reply(*login_with(client, "PLAIN", password="wrong password!"), R.AUTH_INVALID)
    code, reply = login_with(client, "PLAIN")  # even the right password is not checked now
    assert_reply(code, reply, R.AUTH_RATE_LIMITED)
    assert "from 127.0.0.1" in reply.decode() and "try again in" in reply.decode()
    client.quit()
    other = relay.smtp(login=None)  # a new connection from the same address is still held back
    assert_reply(*login_with(other, "LOGIN"), R.AUTH_RATE_LIMITED)
    other.quit()


def test_a_burst_of_parallel_wrong_passwords_gets_no_more_checks_than_the_limit(start_relay: StartRelay) -> None:
    """Twelve connections send a wrong password at the same moment. Password checks run off the event loop,
    so without reserving a slot before the check all twelve would be verified and answered 535; the limiter
    must count attempts in flight, so only the limit's worth is checked and the rest are held back."""
    relay = start_relay(smtp_auth_failures_per_minute=3)
    clients = [relay.smtp(login=None) for _ in range(12)]
    start = threading.Barrier(len(clients))

    def attempt(client: smtplib.SMTP) -> int:
        start.wait()
        code, _ = login_with(client, "PLAIN", password="wrong password!")
        return code

    with ThreadPoolExecutor(len(clients)) as pool:
        codes = list(pool.map(attempt, clients))
    for client in clients:
        client.quit()
    assert codes.count(R.AUTH_INVALID.code) <= 3, codes
    assert codes.count(R.AUTH_INVALID.code) + codes.count(R.AUTH_RATE_LIMITED.code) == len(clients), codes
    assert codes.count(R.AUTH_RATE_LIMITED.code) >= 9, codes


def test_disabled_and_removed_users_cannot_log_in(relay: Relay) -> None:
    relay.users.add("printer", "printer password 1")
    relay.users.update("printer", disabled=True)
    client = relay.smtp(login=None)
    assert_reply(*login_with(client, "PLAIN", "printer", "printer password 1"), R.AUTH_INVALID)
    relay.users.remove(USER)
    assert_reply(*login_with(client, "PLAIN"), R.AUTH_INVALID)
    client.quit()


def test_enforce_refuses_a_from_the_mailbox_may_not_send_as(start_relay: StartRelay, admin: SandboxAdmin) -> None:
    relay = start_relay(smtp_from_policy="enforce")
    mailbox = relay.connector.user_name
    client = relay.smtp()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("app@example.com", ["someone@example.com"], message(sender="app@example.com"))
    assert_reply(refused.value.smtp_code, refused.value.smtp_error, R.FROM_NOT_ALLOWED)
    text = refused.value.smtp_error.decode()
    assert "app@example.com" in text and f"relay user '{USER}'" in text and mailbox in text
    client.sendmail("app@example.com", ["someone@example.com"], message(sender=f"System <{mailbox}>"))
    client.quit()
    relay.deliver()
    raw = admin.raw(admin.only_message()["id"])
    assert raw["From"] == f"System <{mailbox}>" and raw["Reply-To"] is None


def test_allowed_from_limits_what_a_relay_user_may_claim(relay: Relay) -> None:
    relay.users.add("scanner", "scanner password 1", allowed_from=["@example.com"])
    client = relay.smtp(login=("scanner", "scanner password 1"))
    client.sendmail("scan@example.com", ["someone@example.com"], message(sender="Scanner <scan@example.com>"))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("scan@example.org", ["someone@example.com"], message(sender="scan@example.org"))
    assert_reply(refused.value.smtp_code, refused.value.smtp_error, R.FROM_NOT_ALLOWED)
    assert "@example.com" in refused.value.smtp_error.decode()
    client.quit()
    [queued] = relay.queued()
    headers = relay.runtime.outbox.headers(queued.id).decode()
    assert f"From: Scanner <{relay.connector.user_name}>" in headers
    assert "Reply-To: Scanner <scan@example.com>" in headers


def test_rewrite_keeps_an_existing_reply_to(relay: Relay) -> None:
    client = relay.smtp()
    client.sendmail("app@example.com", ["a@example.com"], message(extra="Reply-To: helpdesk@example.com\r\n"))
    client.quit()
    headers = relay.runtime.outbox.headers(relay.queued()[0].id).decode()
    assert "Reply-To: helpdesk@example.com" in headers and "app@example.com" not in headers


def test_one_copy_per_recipient_with_the_full_to_list_gives_one_delivery_each(
    relay: Relay, admin: SandboxAdmin
) -> None:
    """A client that submits one copy per recipient, each with the whole To list, must not make everyone
    receive N copies: Graph is asked to deliver each copy to its envelope recipient only."""
    everyone = ["a@example.com", "b@example.com", "c@example.com"]
    client = relay.smtp()
    for recipient in everyone:
        client.sendmail("app@example.com", [recipient], message(to=", ".join(everyone), subject=f"for {recipient}"))
    client.sendmail("app@example.com", ["a@example.com", "hidden@example.com"], message(to="a@example.com"))
    client.quit()
    relay.deliver()
    captured = {m["subject"]: m for m in admin.messages()}
    assert len(captured) == 4
    for recipient in everyone:
        copy = captured[f"for {recipient}"]
        assert copy["to"] + copy["cc"] + copy["bcc"] == [recipient]
    blind = captured["hello"]
    assert (blind["to"], blind["bcc"]) == (["a@example.com"], ["hidden@example.com"])


def _send_unicode(relay: Relay) -> None:
    msg = EmailMessage()
    msg["From"] = "Zoë <zoë@example.com>"
    msg["To"] = "Jörg Müller <jörg@example.com>"
    msg["Subject"] = "Grüße — 日本語 ✓"
    msg.set_content("Käse für alle.")
    client = relay.smtp()
    assert client.send_message(msg) == {}  # smtplib uses SMTPUTF8 for the non-ASCII addresses
    client.quit()


def test_unicode_addresses_and_subjects_are_queued_intact(relay: Relay) -> None:
    _send_unicode(relay)
    [queued] = relay.queued()
    assert queued.recipients == ("jörg@example.com",)
    assert queued.subject == "Grüße — 日本語 ✓"
    headers = relay.runtime.outbox.headers(queued.id).decode("utf-8")
    assert "To: Jörg Müller <jörg@example.com>" in headers
    assert "Reply-To: Zoë <zoë@example.com>" in headers
    assert " with UTF8SMTPSA id " in " ".join(headers.split())


def test_unicode_addresses_and_subjects_survive_to_the_sandbox(relay: Relay, admin: SandboxAdmin) -> None:
    _send_unicode(relay)
    relay.deliver()
    captured = admin.only_message()
    assert captured["to"] == ["jörg@example.com"]
    assert captured["subject"] == "Grüße — 日本語 ✓"
    raw = admin.raw(captured["id"])
    assert raw["Reply-To"] == "Zoë <zoë@example.com>"
    assert raw.get_content().strip() == "Käse für alle."  # type: ignore[attr-defined]


def test_a_non_ascii_address_needs_smtputf8(relay: Relay) -> None:
    with relay.raw() as raw:
        raw.reply()
        raw.command("EHLO client.example")
        raw.command(f"AUTH PLAIN {plain_auth(USER, PASSWORD)}")
        assert_reply(*raw.command("MAIL FROM:<app@example.com>"), R.SENDER_OK)
        assert_reply(*raw.command("RCPT TO:<jörg@example.com>"), R.NON_ASCII_WITHOUT_SMTPUTF8)
        raw.command("RSET")
        assert_reply(*raw.command("MAIL FROM:<zoë@example.com>"), R.NON_ASCII_WITHOUT_SMTPUTF8)
        assert_reply(*raw.command("MAIL FROM:<zoë@example.com> SMTPUTF8"), R.SENDER_OK)
        assert_reply(*raw.command("RCPT TO:<jörg@example.com>"), R.RECIPIENT_OK)
