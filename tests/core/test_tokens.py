"""Tokens: one request per token lifetime, rebuilt on configuration change, TLS trust from the connector's
CA file only, and never written to logs."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from email.message import EmailMessage

import pytest

from m365relay.connectors import ConnectorConfig, ConnectorUpdate
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update


def messages(mailbox: str, n: int) -> list[EmailMessage]:
    out = []
    for i in range(n):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = mailbox, f"r{i}@example.com", f"message {i}"
        msg.set_content("x")
        out.append(msg)
    return out


def send_all(runtime: Runtime, connector: ConnectorConfig, batch: list[EmailMessage]) -> None:
    async def go() -> None:
        lane = asyncio.Semaphore(4)  # Graph's concurrency limit per mailbox; the dispatcher keeps it normally

        async def one(message: EmailMessage) -> None:
            async with lane:
                await runtime.sender.send(connector, message)

        try:
            await asyncio.gather(*(one(m) for m in batch))
        finally:
            await runtime.sender.aclose()

    asyncio.run(go())


def test_many_messages_cause_exactly_one_token_request(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    send_all(runtime, connector, messages(connector.user_name, 25))
    stats = admin.stats()
    assert stats["sendMail"] == 25
    assert stats["token"] == 1 and stats["token_success"] == 1


def test_configuration_change_rebuilds_the_application(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    send_all(runtime, connector, messages(connector.user_name, 2))
    new = admin.add_secret()
    changed = runtime.connectors.save("default", ConnectorUpdate(secret=new["value"], secret_expires="2027-01-31"))
    assert changed.token_key != connector.token_key
    send_all(runtime, changed, messages(connector.user_name, 2))
    assert admin.stats()["token_success"] == 2


def test_requests_ca_bundle_cannot_override_the_connector_trust(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    # PROTOCOL.md §11: with requests, REQUESTS_CA_BUNDLE silently replaces verify=. Ours must not care.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/ca.pem")
    send_all(runtime, connector, messages(connector.user_name, 1))
    assert admin.stats()["sendMail"] == 1


def test_tokens_and_secrets_never_reach_the_logs(
    runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    connector = runtime.connectors.save("default", connector_update(sandbox))
    send_all(runtime, connector, messages(connector.user_name, 2))
    token = runtime.tokens.acquire(connector)
    secret = admin.demo["secret_value"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged, "debug logging was captured"
    assert token.value.reveal() not in logged
    assert secret not in logged
    assert token.value.reveal() not in repr(token)


def test_cli_send_failure_output_carries_no_secret(runtime: Runtime, sandbox: SandboxServer) -> None:
    import os

    wrong = "wrongQ~0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"
    runtime.connectors.save("default", connector_update(sandbox, secret=wrong))
    env = {**os.environ, "M365RELAY_HOME": str(runtime.settings.home)}
    done = subprocess.run(
        [sys.executable, "-m", "m365relay", "send", "--to", "a@example.com", "--now"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 78  # EX_CONFIG: the connector's setup is wrong
    assert "AADSTS7000215" in done.stderr and "what to do:" in done.stderr
    assert wrong not in done.stderr + done.stdout


def test_a_send_prepared_before_a_rotation_uses_the_new_credential(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    old_snapshot = connector
    runtime.tokens.acquire(old_snapshot)
    new = admin.add_secret()
    rotated = runtime.connectors.save("default", ConnectorUpdate(secret=new["value"], secret_expires="2027-01-31"))
    runtime.tokens.acquire(rotated)
    admin.delete_secret(admin.demo["secret_id"])  # the admin removes the old secret in Azure
    # A message claimed before the change still holds the old snapshot: it must not rebuild from the old secret.
    token = runtime.tokens.acquire(old_snapshot)
    assert token.roles is not None and "Mail.Send" in token.roles
    assert admin.stats()["token_failures"] == {}


def test_http_request_logs_carry_no_query_strings(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    # Upload-session URLs carry their own authorisation in the query string (…?authtoken=…).
    import os as _os

    from m365relay.compose import AttachmentSpec, MessageSpec, compose

    admin.grant("Mail.Send", "Mail.ReadWrite")
    runtime.tokens.invalidate(connector.id)
    caplog.set_level(logging.DEBUG)
    spec = MessageSpec(
        to=["big@example.com"], subject="large", attachments=[AttachmentSpec("data.bin", _os.urandom(5 * 1024 * 1024))]
    )

    async def go() -> None:
        try:
            await runtime.sender.send(connector, compose(spec, default_from=connector.user_name))
        finally:
            await runtime.sender.aclose()

    asyncio.run(go())
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("AttachmentSessions" in line for line in requests), "the upload PUTs were logged"
    assert not any("authtoken" in line for line in requests)


def test_quiet_http_drops_the_request_line(caplog: pytest.LogCaptureFixture) -> None:
    import httpx

    from m365relay.net import quiet_http, sync_client

    caplog.set_level(logging.INFO)
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    with sync_client(None, transport=transport) as client, quiet_http():
        client.post("https://hooks.example/services/T0/B0/SECRET")
    assert not [r for r in caplog.records if "SECRET" in r.getMessage()]
