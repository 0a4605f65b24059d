"""The doctor over HTTP (``/api/v1/connectors/{id}/checks``): the same six results as the CLI, check 6 only
on POST with the admin scope, and no secret in any answer."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from m365relay.access.api_keys import ApiKeyStore
from m365relay.connectors import ConnectorConfig, ConnectorUpdate
from m365relay.runtime import Runtime
from m365relay.web import create_app
from support import SandboxAdmin


def call(
    runtime: Runtime, method: str, path: str, scopes: list[str], connector_id: int | None = None, **kw: Any
) -> httpx.Response:
    token = ApiKeyStore(runtime.db).create(f"key-{uuid.uuid4().hex[:8]}", scopes, connector_id=connector_id).token

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(runtime))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as client:
                return await client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        finally:
            await runtime.sender.aclose()

    return asyncio.run(go())


def test_get_runs_checks_one_to_five(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.grant()
    answer = call(runtime, "GET", f"/api/v1/connectors/{connector.id}/checks", ["read"])
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["connector"] == "default" and report["ok"] is False and report["exit_status"] == 78
    assert [c["id"] for c in report["checks"]] == [
        "config",
        "tenant",
        "app",
        "credential",
        "permission",
        "mailbox",
        "read",
    ]
    assert [c["status"] for c in report["checks"]] == ["pass", "pass", "pass", "pass", "fail", "skip", "skip"]
    assert "adminconsent" in report["checks"][4]["data"]["consent_url"]
    assert admin.demo["secret_value"] not in answer.text


def test_post_sends_the_test_message_with_the_admin_scope_only(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    path = f"/api/v1/connectors/{connector.id}/checks"
    refused = call(runtime, "POST", path, ["read"], json={"send_test_to": "api@example.com"})
    assert refused.status_code == 403 and admin.messages() == []
    answer = call(runtime, "POST", path, ["admin"], json={"send_test_to": "api@example.com"})
    assert answer.status_code == 200, answer.text
    mailbox = answer.json()["checks"][5]
    assert mailbox["status"] == "pass" and admin.only_message()["request_id"] == mailbox["data"]["request_id"]
    bad = call(runtime, "POST", path, ["admin"], json={"send_test_to": "not an address"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert len(admin.messages()) == 1
    missing = call(runtime, "GET", "/api/v1/connectors/999/checks", ["read"])
    assert missing.status_code == 404
    other = runtime.connectors.save(
        "other",
        ConnectorUpdate(client_id=connector.client_id, tenant_id=connector.tenant_id, user_name="other@contoso.com"),
    )
    elsewhere = call(runtime, "GET", path, ["admin"], connector_id=other.id)
    assert elsewhere.status_code == 403 and "bound to another connector" in elsewhere.text
