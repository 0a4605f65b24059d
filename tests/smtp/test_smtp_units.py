"""The relay's decisions as functions: client rules by address, the AUTH failure limiter on a fake clock, the
From policy, the Received stamp, the self-signed STARTTLS pair, and the relay-user and admin stores."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from smtp_support import FAST_PASSWORDS

from m365relay.access.admins import AdminStore
from m365relay.access.relay_users import RelayUserStore
from m365relay.errors import ConflictError, NotFoundError, ValidationError
from m365relay.graph.acceptance import SenderRules
from m365relay.graph.mime import OutgoingMessage
from m365relay.ingress.smtp_message import ReceivedStamp, apply_sender_rules, received_value
from m365relay.ingress.smtp_policy import AuthFailureLimiter, ClientRules, limiter_key, parse_networks, peer_address
from m365relay.ingress.smtp_replies import SmtpRefusal
from m365relay.ingress.smtp_tls import ensure_self_signed
from m365relay.runtime import Runtime

LOOPBACK = ipaddress.ip_address("127.0.0.1")
LAN = ipaddress.ip_address("10.1.2.3")


def test_auth_without_tls_only_on_loopback_and_only_if_allowed() -> None:
    default = ClientRules()
    assert default.may_auth_without_tls(LOOPBACK) and default.may_auth_without_tls(ipaddress.ip_address("::1"))
    assert not default.may_auth_without_tls(LAN)
    assert not default.may_auth_without_tls(None)
    assert not ClientRules(allow_loopback_plain=False).may_auth_without_tls(LOOPBACK)
    assert ClientRules(auth_require_tls=False).may_auth_without_tls(LAN)


def test_only_an_explicit_allowlist_relays_without_auth() -> None:
    assert not ClientRules().may_relay_without_auth(LOOPBACK), "not even loopback by default"
    rules = ClientRules(allowed_networks=parse_networks(["10.1.0.0/16", "2001:db8::/64"]))
    assert rules.may_relay_without_auth(LAN)
    assert rules.may_relay_without_auth(peer_address(("::ffff:10.1.9.9", 25, 0, 0)))  # IPv4-mapped
    assert rules.may_relay_without_auth(ipaddress.ip_address("2001:db8::42"))
    assert not rules.may_relay_without_auth(ipaddress.ip_address("10.2.0.1"))
    with pytest.raises(ValidationError, match="not a network"):
        parse_networks(["10.0.0.0/33"])


def test_failed_auth_limiter_uses_a_sliding_minute() -> None:
    now = [1000.0]
    limiter = AuthFailureLimiter(3, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.blocked_for("10.1.2.3") == 0
        limiter.failed("10.1.2.3")
        now[0] += 10
    assert limiter.blocked_for("10.1.2.3") == 30  # at 1030; the first failure leaves the window at 1060
    assert limiter.blocked_for("10.9.9.9") == 0, "other clients are not affected"
    now[0] = 1060.5
    assert limiter.blocked_for("10.1.2.3") == 0
    assert AuthFailureLimiter(0).blocked_for("x") == 0, "0 disables the limit"
    assert limiter_key(ipaddress.ip_address("2001:db8::1")) == limiter_key(ipaddress.ip_address("2001:db8::ffff"))


def test_attempts_being_checked_hold_their_place_until_the_outcome_is_known() -> None:
    now = [1000.0]
    limiter = AuthFailureLimiter(2, clock=lambda: now[0])
    assert limiter.begin("10.1.2.3") == 0 and limiter.begin("10.1.2.3") == 0
    assert limiter.begin("10.1.2.3") == 60, "two checks in flight fill a limit of two"
    limiter.end("10.1.2.3", failed=False)  # a right password (or a store outage) frees its place
    assert limiter.begin("10.1.2.3") == 0
    limiter.end("10.1.2.3", failed=True)
    limiter.end("10.1.2.3", failed=True)
    assert limiter.blocked_for("10.1.2.3") == 60 and limiter.begin("10.1.2.3") == 60
    now[0] += 61
    assert limiter.begin("10.1.2.3") == 0


def _message(headers: str) -> OutgoingMessage:
    return OutgoingMessage.from_bytes(headers.encode() + b"\r\nbody\r\n")


def test_rewrite_moves_from_to_reply_to_and_drops_sender() -> None:
    msg = _message("From: App <app@example.com>\r\nSender: robot@example.com\r\nTo: x@example.com\r\n")
    apply_sender_rules(msg, SenderRules("noreply@contoso.com", (), "rewrite", "relay user 'app'"))
    assert str(msg.headers["From"]) == "App <noreply@contoso.com>"
    assert str(msg.headers["Reply-To"]) == "App <app@example.com>"
    assert msg.headers["Sender"] is None


def test_enforce_accepts_the_mailbox_and_allowed_addresses_only() -> None:
    rules = SenderRules("noreply@contoso.com", ("ops@contoso.com", "@alerts.contoso.com"), "enforce", "client x")
    for ok in ("NoReply@Contoso.com", "ops@contoso.com", "pager@alerts.contoso.com"):
        msg = _message(f"From: {ok}\r\n")
        apply_sender_rules(msg, rules)
        assert [m.addr_spec for m in msg.mailboxes("From")] == [ok]
    with pytest.raises(SmtpRefusal, match=r"^550 5\.7\.1 From eve@contoso\.com is not allowed for client x"):
        apply_sender_rules(_message("From: eve@contoso.com\r\n"), rules)
    with pytest.raises(SmtpRefusal, match=r"robot@example\.com"):
        apply_sender_rules(_message("From: ops@contoso.com\r\nSender: robot@example.com\r\n"), rules)


def test_received_stamp_follows_rfc_5321_and_cannot_be_bent_by_helo() -> None:
    stamp = ReceivedStamp(
        helo="evil\r\nBcc: x (", peer_ip="2001:db8::1", hostname="relay.contoso.com", protocol="ESMTPSA",
        session_id="abc123", recipient="a@example.com", when=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )  # fmt: skip
    assert received_value(stamp) == (
        "from evil??Bcc:?x?? ([IPv6:2001:db8::1])\r\n\tby relay.contoso.com (m365relay)\r\n"
        "\twith ESMTPSA id abc123\r\n\tfor <a@example.com>;\r\n\tFri, 02 Jan 2026 03:04:05 +0000"
    )


def test_self_signed_pair_is_created_once_with_a_private_key(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path / "smtp-tls", "relay.contoso.com")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "relay.contoso.com" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    before = cert_path.read_bytes()
    assert ensure_self_signed(tmp_path / "smtp-tls", "relay.contoso.com") == (cert_path, key_path)
    assert cert_path.read_bytes() == before, "reused, not regenerated"


def test_relay_user_store(runtime: Runtime) -> None:
    users = RelayUserStore(runtime.db, FAST_PASSWORDS, runtime.clock)
    user = users.add(" Scanner ", "scanner password 1", allowed_from=["Scan@Example.com", "*@alerts.example.com"])
    assert (user.username, user.allowed_from) == ("scanner", ("scan@example.com", "@alerts.example.com"))
    first = users.authenticate("SCANNER", "scanner password 1")
    assert first is not None and first.id == user.id
    assert users.authenticate("scanner", "scanner password 1") is not None, "remembered login"
    users.set_password("scanner", "another password 2")
    assert users.authenticate("scanner", "scanner password 1") is None, "a new password ends the remembered one"
    assert users.authenticate("scanner", "another password 2") is not None
    assert users.authenticate("nobody", "another password 2") is None
    assert users.get("scanner").last_used_at is not None
    with pytest.raises(ConflictError):
        users.add("scanner", "scanner password 1")
    with pytest.raises(ValidationError, match="at least 12"):
        users.add("short", "short")
    with pytest.raises(ValidationError, match="neither an address"):
        users.add("bad", "a good long password", allowed_from=["not-an-address"])
    with pytest.raises(ValidationError, match="no connector"):
        users.add("lost", "a good long password", connector="missing")
    users.remove("scanner")
    with pytest.raises(NotFoundError):
        users.remove("scanner")
    assert users.list() == []


def test_admin_store(runtime: Runtime) -> None:
    admins = AdminStore(runtime.db, FAST_PASSWORDS, runtime.clock)
    admins.create_user("Admin", "admin password 1")
    assert admins.verify("admin", "wrong password 1") is None
    found = admins.verify("ADMIN", "admin password 1")
    assert found is not None and found.username == "admin"
    assert admins.get("admin").last_login_at is not None
    admins.set_password("admin", "admin password 2")
    assert admins.verify("admin", "admin password 1") is None
    assert [a.username for a in admins.list()] == ["admin"]
    with pytest.raises(ConflictError):
        admins.create_user("admin", "admin password 3")
