"""End to end against the sandbox: sent → bounced (5.1.10 / 5.1.1) from the NDRs in the mailbox's Inbox, then
suppression at acceptance (API 422, SMTP 550 5.1.1 at RCPT) until `suppression rm` lets mail through again."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Api, api_settings, drain, serve_api
from delivery_support import TENANT_DOMAIN, read_inbox, wait_for_states
from smtp_support import FAST_PASSWORDS, PASSWORD, USER, ServerThread
from sqlalchemy import select

from m365relay.access.relay_users import RelayUserStore
from m365relay.connectors import ConnectorConfig
from m365relay.db.models import AuditRow
from m365relay.ingress.smtp import SmtpServer
from m365relay.runtime import Runtime
from m365relay.settings import Settings
from support import SandboxAdmin

NOBODY = f"nobody@{TENANT_DOMAIN}"
INVALID = "x@bad.invalid"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return api_settings(tmp_path / "home", inbox_poll_seconds=0.2)


@pytest.fixture
def api(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> Iterator[Api]:
    admin.grant("Mail.Send", "Mail.Read")
    admin.client.put("/_sandbox/inbox/settings", json={"ndr_delay_seconds": 0}).raise_for_status()
    runtime.tokens.invalidate(connector.id)
    yield from serve_api(runtime, connector)


def send(api: Api, *to: str) -> int:
    response = api.client().post("/messages", json={"to": list(to), "subject": "Reset", "text": "Hi"})
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def test_bounce_then_suppression_then_removal(
    api: Api, runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    client = api.client()
    first, second = send(api, NOBODY), send(api, INVALID)
    drain(runtime)
    assert client.get(f"/messages/{first}").json()["status"] == "sent"
    [nobody] = wait_for_states(runtime, connector, client, first, "bounced")
    [invalid] = wait_for_states(runtime, connector, client, second, "bounced")
    assert (nobody["address"], nobody["status"]) == (NOBODY, "5.1.10")
    assert "RecipientNotFound" in nobody["diagnostic"] and nobody["at"]
    assert (invalid["address"], invalid["status"]) == (INVALID, "5.1.1")
    events = [e for e in client.get(f"/messages/{first}").json()["events"] if e["kind"] == "bounced"]
    assert len(events) == 1
    detail = json.loads(events[0]["detail"])
    assert detail["recipient"] == NOBODY and detail["status"] == "5.1.10" and detail["reported_at"]
    # Reading again changes nothing: the deltaLink moved on and recording is idempotent.
    assert read_inbox(runtime, connector) == 0
    listed = client.get("/messages", params={"status": "bounced"}).json()["items"]
    assert {m["id"] for m in listed} == {first, second}

    # The next message to the address is refused at acceptance, and says why.
    refused = client.post("/messages", json={"to": [NOBODY], "subject": "Again", "text": "Hi"})
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["type"].endswith("recipient-suppressed") and problem["addresses"] == [NOBODY]
    assert "5.1.10" in problem["detail"]
    # With another recipient it goes out to that one only, and the suppressed one is recorded.
    mixed = send(api, NOBODY, "fine@example.com")
    drain(runtime)
    states = {r["address"]: r["state"] for r in client.get(f"/messages/{mixed}").json()["recipients"]}
    assert states == {"fine@example.com": "sent", NOBODY: "suppressed"}
    captured = admin.messages()[0]
    assert captured["to"] == ["fine@example.com"] and captured["cc"] == [] and captured["bcc"] == []

    # SMTP: 550 5.1.1 at RCPT for the suppressed address; other recipients still accepted.
    users = RelayUserStore(runtime.db, FAST_PASSWORDS, runtime.clock)
    users.add(USER, PASSWORD)
    thread = ServerThread(SmtpServer(runtime, host="127.0.0.1", port=0, users=users)).start()
    try:
        with smtplib.SMTP("127.0.0.1", thread.server.port, timeout=30) as smtp:
            smtp.ehlo("client.example")
            smtp.login(USER, PASSWORD)
            smtp.mail(connector.user_name)
            code, text = smtp.rcpt(INVALID)
            assert code == 550 and text.decode().startswith(f"5.1.1 <{INVALID}> is suppressed after a hard bounce on ")
            assert "(5.1.1)" in text.decode()
            assert smtp.rcpt("ok@example.com")[0] == 250

        # `suppression rm` (here through the API) lets mail through again.
        removed = api.client("admin").delete("/suppressions", params={"address": INVALID, "connector": connector.name})
        assert removed.status_code == 200, removed.text
        with smtplib.SMTP("127.0.0.1", thread.server.port, timeout=30) as smtp:
            smtp.ehlo("client.example")
            smtp.login(USER, PASSWORD)
            smtp.mail(connector.user_name)
            assert smtp.rcpt(INVALID)[0] == 250
    finally:
        thread.stop()
    audit = [a for a in client.get("/suppressions").json()["items"]]
    assert [a["address"] for a in audit] == [NOBODY]


def test_without_mail_read_nothing_is_read(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.client.put("/_sandbox/inbox/settings", json={"ndr_delay_seconds": 0}).raise_for_status()
    assert read_inbox(runtime, connector) == 0
    assert admin.stats()["calls"].get("inboxDelta", 0) == 0


def cli(runtime: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "M365RELAY_HOME": str(runtime.settings.home), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "m365relay", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


def test_cli_shows_recipients_and_manages_suppressions(api: Api, runtime: Runtime, connector: ConnectorConfig) -> None:
    message = send(api, NOBODY, "fine@example.com")
    drain(runtime)
    wait_for_states(runtime, connector, api.client(), message, "bounced", only=NOBODY)
    shown = cli(runtime, "queue", "show", str(message)).stdout
    assert "bounced" in shown and "5.1.10" in shown and "fine@example.com" in shown
    as_json = json.loads(cli(runtime, "queue", "show", str(message), "--json").stdout)
    assert {r["address"]: r["state"] for r in as_json["recipients"]} == {NOBODY: "bounced", "fine@example.com": "sent"}
    assert str(message) in cli(runtime, "queue", "ls", "--status", "bounced").stdout
    assert NOBODY in cli(runtime, "suppression", "ls").stdout
    cli(runtime, "suppression", "add", "Manual@Example.com", "--reason", "asked to stop")
    assert "manual@example.com" in cli(runtime, "suppression", "ls").stdout
    cli(runtime, "suppression", "rm", NOBODY)
    listed = cli(runtime, "suppression", "ls").stdout
    assert NOBODY not in listed and "manual@example.com" in listed
    with runtime.db.read() as session:
        actions = [(a.actor, a.action, a.target) for a in session.scalars(select(AuditRow).order_by(AuditRow.id))]
    assert ("bounce-intake", "suppression.add", NOBODY) in actions
    assert ("cli", "suppression.add", "manual@example.com") in actions and (
        "cli",
        "suppression.remove",
        NOBODY,
    ) in actions


def test_reports_older_than_the_outbox_are_not_downloaded(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    from sandbox_support import mime, send_mime, token

    admin.grant("Mail.Send", "Mail.Read")
    admin.client.put("/_sandbox/inbox/settings", json={"ndr_delay_seconds": 0}).raise_for_status()
    access = token(admin.client, admin.server)
    send_mime(admin.client, connector.user_name, access, mime(connector.user_name, to=INVALID)).raise_for_status()
    assert read_inbox(runtime, connector) == 0  # the outbox is empty: nothing can match
    stats = admin.stats()["calls"]
    assert stats.get("inboxDelta", 0) >= 1 and stats.get("messageValue", 0) == 0
