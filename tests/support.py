"""Test helpers that talk to the sandbox over its HTTP admin API (never its internals)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from m365relay.connectors import ConnectorUpdate
from m365relay.sandbox import SandboxServer
from m365relay.settings import Settings, load_settings


def make_settings(home: Path, database_url: str | None = None, **overrides: object) -> Settings:
    """Settings for a test: a private home, short retry and probe delays."""
    fast = {
        "poll_interval": 0.05,
        "retry_base_seconds": 0.2,
        "retry_max_seconds": 2.0,
        "probe_base_seconds": 0.2,
        "probe_max_seconds": 1.0,
    }
    return load_settings(environ={}, home=home, database_url=database_url, **{**fast, **overrides})


SECRET_EXPIRES = (date.today() + timedelta(days=300)).isoformat()


def connector_update(sandbox: SandboxServer, **overrides: Any) -> ConnectorUpdate:
    demo = sandbox.demo_info
    assert demo is not None
    values: dict[str, Any] = {
        "client_id": demo["client_id"],
        "tenant_id": demo["tenant_id"],
        "user_name": demo["mailbox"],
        "cloud": "custom",
        "login_url": sandbox.url,
        "graph_url": sandbox.url,
        "ca_file": str(sandbox.ca_file),
        "secret": demo["secret_value"],
        "secret_expires": SECRET_EXPIRES,
    }
    values.update(overrides)
    return ConnectorUpdate(**values)


class SandboxAdmin:
    def __init__(self, server: SandboxServer, client: httpx.Client) -> None:
        self.server = server
        self.client = client
        demo = server.demo_info
        assert demo is not None
        self.demo: dict[str, Any] = dict(demo)

    def _ok(self, response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json() if response.content else None

    # directory
    def patch_app(self, client_id: str | None = None, **changes: Any) -> Any:
        return self._ok(self.client.patch(f"/_sandbox/apps/{client_id or self.demo['client_id']}", json=changes))

    def grant(self, *roles: str) -> Any:
        return self.patch_app(granted_roles=list(roles))

    def add_secret(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(
            self.client.post(f"/_sandbox/apps/{self.demo['client_id']}/secrets", json=body)
        )
        return result

    def expire_secret(self, secret_id: str | None = None) -> Any:
        past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        sid = secret_id or self.demo["secret_id"]
        return self._ok(
            self.client.patch(f"/_sandbox/apps/{self.demo['client_id']}/secrets/{sid}", json={"expires_at": past})
        )

    def add_certificate(self, pem: str) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(
            self.client.post(f"/_sandbox/apps/{self.demo['client_id']}/certificates", json={"pem": pem})
        )
        return result

    def put_mailbox(self, address: str, **body: Any) -> Any:
        return self._ok(self.client.put(f"/_sandbox/mailboxes/{address}", json=body))

    def put_policy(self, allowed: list[str], client_id: str | None = None) -> Any:
        cid = client_id or self.demo["client_id"]
        return self._ok(self.client.put(f"/_sandbox/access-policies/{cid}", json={"allowed_mailboxes": allowed}))

    def add_tenant(self, tenant_id: str, domains: list[str], cloud: str = "global") -> Any:
        return self._ok(
            self.client.post("/_sandbox/tenants", json={"id": tenant_id, "domains": domains, "cloud": cloud})
        )

    # runtime
    def faults(self, rules: dict[str, Any]) -> Any:
        return self._ok(self.client.put("/_sandbox/faults", json=rules))

    def clear_faults(self) -> Any:
        return self._ok(self.client.delete("/_sandbox/faults"))

    def clock(self, offset_seconds: float) -> Any:
        return self._ok(self.client.put("/_sandbox/clock", json={"offset_seconds": offset_seconds}))

    def latency(self, ms: float) -> Any:
        return self._ok(self.client.put("/_sandbox/latency", json={"ms": ms}))

    def limits(self, **values: Any) -> Any:
        return self._ok(self.client.put("/_sandbox/limits", json=values))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(self.client.get("/_sandbox/stats"))
        return result

    # captured mail
    def messages(self, **query: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._ok(self.client.get("/_sandbox/messages", params=query))
        return result

    def detail(self, message_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(self.client.get(f"/_sandbox/messages/{message_id}"))
        return result

    def raw(self, message_id: str) -> EmailMessage:
        response = self.client.get(f"/_sandbox/messages/{message_id}/raw")
        response.raise_for_status()
        parsed = email.message_from_bytes(response.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def only_message(self) -> dict[str, Any]:
        found = self.messages()
        assert len(found) == 1, f"expected one captured message, found {len(found)}"
        return found[0]

    # -- added for the doctor and credential lifecycle tests (issue 8) ----------------------------------

    def delete_secret(self, secret_id: str, client_id: str | None = None) -> Any:
        cid = client_id or self.demo["client_id"]
        return self._ok(self.client.delete(f"/_sandbox/apps/{cid}/secrets/{secret_id}"))

    def add_app(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(self.client.post("/_sandbox/apps", json=body))
        return result
