"""The From policy knows the connector's send-as mailboxes: SMTP clients (smtplib, over STARTTLS) may send
From them, the mail keeps that From and goes through that mailbox; a From outside the list is refused
(enforce) or rewritten to the User Name (rewrite); relay users' ``allowed_from`` may name them."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sendas_support import ALERTS, BILLING, DOMAIN
from smtp_support import FAST_PASSWORDS, PASSWORD, USER, Relay, ServerThread, message

from m365relay.access.relay_users import RelayUserStore
from m365relay.ingress.smtp import SmtpServer
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update, make_settings

StartRelay = Callable[..., Relay]


@pytest.fixture
def start_relay(tmp_path: Path, sandbox: SandboxServer, mailboxes: list[str]) -> Iterator[StartRelay]:
    started: list[Relay] = []

    def start(*, allowed_from: tuple[str, ...] = (), **overrides: Any) -> Relay:
        runtime = Runtime(make_settings(tmp_path / f"relay{len(started)}", **overrides))
        connector = runtime.connectors.save("default", connector_update(sandbox, send_as=[BILLING, ALERTS]))
        users = RelayUserStore(runtime.db, FAST_PASSWORDS, runtime.clock)
        users.add(USER, PASSWORD, allowed_from=allowed_from)
        thread = ServerThread(SmtpServer(runtime, host="127.0.0.1", port=0, users=users)).start()
        relay = Relay(runtime, users, connector, thread, "127.0.0.1")
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.close_clients()
        relay.thread.stop()
        relay.runtime.close()


def captured(admin: SandboxAdmin) -> list[tuple[str, str, str | None]]:
    """(sending mailbox, From, Reply-To) of each captured message."""
    out = []
    for m in admin.messages(limit=100):
        raw = admin.raw(m["id"])
        out.append((m["mailbox"].lower(), m["from"].lower(), raw["Reply-To"]))
    return sorted(out)


def test_enforce_takes_the_send_as_mailboxes_and_refuses_any_other_from(
    start_relay: StartRelay, admin: SandboxAdmin, mailboxes: list[str]
) -> None:
    relay = start_relay(smtp_from_policy="enforce")
    client = relay.smtp()
    for sender in mailboxes:
        client.sendmail(sender, ["someone@example.com"], message(sender=sender))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(f"stranger@{DOMAIN}", ["someone@example.com"], message(sender=f"stranger@{DOMAIN}"))
    assert refused.value.smtp_code == 550 and f"stranger@{DOMAIN}".encode() in refused.value.smtp_error
    assert BILLING.encode() in refused.value.smtp_error, "the refusal lists what the client may use"
    relay.deliver()
    assert captured(admin) == sorted((m, m, None) for m in mailboxes)


def test_rewrite_keeps_a_send_as_from_and_rewrites_any_other(
    start_relay: StartRelay, admin: SandboxAdmin, mailboxes: list[str]
) -> None:
    relay = start_relay(smtp_from_policy="rewrite")
    client = relay.smtp()
    client.sendmail(BILLING, ["someone@example.com"], message(sender=BILLING))
    client.sendmail("app@example.com", ["someone@example.com"], message(sender="app@example.com"))
    relay.deliver()
    user_name = mailboxes[0]
    assert captured(admin) == sorted([(BILLING, BILLING, None), (user_name, user_name, "app@example.com")])


def test_a_relay_users_allowed_from_may_name_a_send_as_mailbox(
    start_relay: StartRelay, admin: SandboxAdmin, mailboxes: list[str]
) -> None:
    """The list restricts the user: billing@ (listed) goes through its own mailbox; alerts@, a send-as
    mailbox of the connector but not on this user's list, is refused."""
    relay = start_relay(smtp_from_policy="enforce", allowed_from=(BILLING,))
    client = relay.smtp()
    client.sendmail(BILLING, ["someone@example.com"], message(sender=BILLING))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(ALERTS, ["someone@example.com"], message(sender=ALERTS))
    assert refused.value.smtp_code == 550
    relay.deliver()
    assert captured(admin) == [(BILLING, BILLING, None)]
