"""Connectors, relay users and API keys through the admin UI's forms (without a browser: an httpx client that
posts forms with the session's CSRF token), and the custom cloud's Graph resource (issue 17, items 2 and 4).

The Graph resource cases fail on the code before this change: the scope was built from the Graph URL, and
the sandbox accepted its own URL as a resource, where Entra answers AADSTS500011.
"""

from __future__ import annotations

import os
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest
from admin_support import AdminClient, text
from sqlalchemy import func, select

from m365relay.access.api_keys import ApiKeyStore
from m365relay.access.relay_users import RelayUserStore
from m365relay.db.models import AuditRow
from m365relay.errors import ConflictError, InvalidScopeError, ValidationError
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update


def test_a_custom_cloud_asks_for_the_real_graph_resource(runtime: Runtime, sandbox: SandboxServer) -> None:
    """Graph calls go to the sandbox's URL (a stand-in for a proxy), the token is for Graph's resource."""
    saved = runtime.connectors.save("default", connector_update(sandbox))
    assert saved.cloud.graph_url == sandbox.url
    assert saved.cloud.scope == "https://graph.microsoft.com/.default"
    assert saved.public_view()["graph_resource"] == "https://graph.microsoft.com"
    token = runtime.tokens.acquire(saved)
    assert token.value.reveal() and token.roles is not None


def test_a_scope_built_from_the_proxy_url_gets_aadsts500011(runtime: Runtime, sandbox: SandboxServer) -> None:
    saved = runtime.connectors.save("default", connector_update(sandbox, graph_resource=sandbox.url))
    assert saved.cloud.scope == f"{sandbox.url}/.default"
    with pytest.raises(InvalidScopeError) as caught:
        runtime.tokens.acquire(saved)
    assert "AADSTS500011" in str(caught.value) or "500011" in (caught.value.code or "")
    # Back to the default (an empty field): the token comes.
    fixed = runtime.connectors.save("default", connector_update(sandbox, graph_resource=""))
    assert fixed.cloud.scope == "https://graph.microsoft.com/.default"
    assert runtime.tokens.acquire(fixed).value.reveal()


def test_a_graph_resource_must_be_an_https_url(runtime: Runtime, sandbox: SandboxServer) -> None:
    with pytest.raises(ValidationError) as caught:
        runtime.connectors.save("default", connector_update(sandbox, graph_resource="http://graph.example"))
    assert caught.value.key == "graph_resource" and "https://" in caught.value.reason
    assert runtime.connectors.find("default") is None, "nothing was saved"


def test_cli_sets_and_shows_the_graph_resource(tmp_path: Path, sandbox: SandboxServer) -> None:
    env = {**os.environ, "M365RELAY_HOME": str(tmp_path / "cli"), "COLUMNS": "200"}
    demo = sandbox.demo_info
    args = [
        "connector", "set", "--client-id", demo["client_id"], "--tenant-id", demo["tenant_id"],
        "--user-name", demo["mailbox"], "--cloud", "custom", "--login-url", sandbox.url, "--graph-url",
        "https://graph-proxy.corp.example", "--graph-resource", "https://graph.microsoft.us", "--json",
    ]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "m365relay", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert '"graph_resource": "https://graph.microsoft.us"' in done.stdout


def test_the_connector_page_keeps_and_checks_the_graph_resource(
    signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer
) -> None:
    runtime.connectors.save("default", connector_update(sandbox))
    form = {
        "client_id": sandbox.demo_info["client_id"],
        "tenant_id": sandbox.demo_info["tenant_id"],
        "user_name": sandbox.demo_info["mailbox"],
        "cloud": "custom",
        "login_url": sandbox.url,
        "graph_url": sandbox.url,
        "ca_file": str(sandbox.ca_file),
        "graph_resource": "ftp://nope",
    }
    refused = signed_in.post("/admin/connectors/smtp", form)
    assert refused.status_code == 422
    assert "Graph resource must be an https:// URL" in text(refused.text)
    saved = signed_in.post("/admin/connectors/smtp", {**form, "graph_resource": "https://graph.microsoft.us"})
    assert saved.status_code == 303
    page = signed_in.get("/admin/connectors/smtp").text
    assert 'value="https://graph.microsoft.us"' in page
    assert runtime.connectors.get("default").cloud.scope == "https://graph.microsoft.us/.default"


def test_connectors_list_new_and_delete(signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer) -> None:
    demo = sandbox.demo_info
    fields = {
        "name": "alerts",
        "client_id": demo["client_id"],
        "tenant_id": "not a tenant",
        "user_name": demo["mailbox"],
        "cloud": "global",
    }
    refused = signed_in.post("/admin/connectors/new", fields)
    assert refused.status_code == 422 and "Tenant ID" in text(refused.text)
    assert runtime.connectors.find("alerts") is None
    created = signed_in.post("/admin/connectors/new", {**fields, "tenant_id": demo["tenant_id"]})
    assert created.status_code == 303 and created.headers["location"] == "/admin/connectors/edit/alerts#settings"
    again = signed_in.post("/admin/connectors/new", {**fields, "tenant_id": demo["tenant_id"]})
    assert again.status_code == 422 and "exists already" in text(again.text)
    listing = text(signed_in.get("/admin/connectors").text)
    assert "alerts" in listing and demo["mailbox"] in listing
    assert signed_in.get("/admin/connectors/edit/nobody").status_code == 404
    # Delete: the name must be typed; with mail in the outbox it is refused.
    alerts = runtime.connectors.get("alerts")
    assert signed_in.post("/admin/connectors/edit/alerts/delete", {"confirm": "alert"}).status_code == 422
    from m365relay import Relay

    Relay(runtime=runtime).enqueue(to=["a@contoso.com"], subject="held", text="x", connector="alerts")
    with pytest.raises(ConflictError):
        runtime.connectors.delete("alerts")
    kept = signed_in.follow(signed_in.post("/admin/connectors/edit/alerts/delete", {"confirm": "alerts"}))
    assert "still has 1 message(s) in the outbox" in unescape(kept.text)
    with runtime.db.write() as session:
        from m365relay.db.models import MessageRow

        session.execute(MessageRow.__table__.delete().where(MessageRow.connector_id == alerts.id))
    gone = signed_in.post("/admin/connectors/edit/alerts/delete", {"confirm": "alerts"})
    assert gone.status_code == 303 and gone.headers["location"] == "/admin/connectors"
    assert runtime.connectors.find("alerts") is None
    with runtime.db.read() as session:
        actions = set(session.scalars(select(AuditRow.action).where(AuditRow.target == "alerts")))
    assert {"connector.save", "connector.delete"} <= actions


def test_relay_users_and_api_keys_use_the_cli_rules(
    signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer
) -> None:
    runtime.connectors.save("default", connector_update(sandbox))
    bad = signed_in.post("/admin/relay-users", {"username": "app", "allowed_from": "not-an-address"})
    assert bad.status_code == 422 and "is neither an address" in text(bad.text)
    short = signed_in.post("/admin/relay-users", {"username": "app", "password": "short"})
    assert short.status_code == 422 and "use at least" in text(short.text)
    users = RelayUserStore(runtime.db, clock=runtime.clock)
    assert users.find("app") is None
    added = signed_in.post(
        "/admin/relay-users", {"username": "app", "password": "", "allowed_from": "@contoso.com, app@example.com"}
    )
    assert added.status_code == 200 and 'id="new-password"' in added.text
    assert users.get("app").allowed_from == ("@contoso.com", "app@example.com")
    updated = signed_in.post("/admin/relay-users/app/update", {"allowed_from": "", "connector": "", "disabled": "on"})
    assert updated.status_code == 303 and users.get("app").disabled and users.get("app").allowed_from == ()
    typed = signed_in.post("/admin/relay-users/app/password", {"password": "a much longer passphrase"})
    assert typed.status_code == 303 and "a much longer passphrase" not in signed_in.follow(typed).text
    # API keys: no scope, or a name of the wrong shape, is refused as by the CLI.
    none = signed_in.post("/admin/api-keys", {"name": "portal"})
    assert none.status_code == 422 and "give at least one scope" in text(none.text)
    csrf = signed_in.csrf("/admin/api-keys")
    made = signed_in.http.post(
        "/admin/api-keys", data={"csrf_token": csrf, "name": "portal", "scopes": ["send", "read"]}
    )
    assert made.status_code == 200
    key = ApiKeyStore(runtime.db, runtime.clock).get("portal")
    assert key.scopes == ("send", "read") and not key.revoked
    with runtime.db.read() as session:
        logged = session.scalar(
            select(func.count())
            .select_from(AuditRow)
            .where(AuditRow.actor.like("web:%"), AuditRow.action.like("api_key.%"))
        )
    assert logged == 1
