"""Helpers for the exactly-once tests: tokens and Graph calls against the sandbox over real HTTPS."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import httpx

from m365relay.sandbox import SandboxServer


def token(api: httpx.Client, server: SandboxServer) -> str:
    info = server.demo_info
    form = {
        "grant_type": "client_credentials",
        "client_id": info["client_id"],
        "client_secret": info["secret_value"],
        "scope": "https://graph.microsoft.com/.default",  # the real resource, as Entra insists (PROTOCOL.md §14)
    }
    response = api.post(f"/{info['tenant_id']}/oauth2/v2.0/token", data=form)
    assert response.status_code == 200, response.text
    value: str = response.json()["access_token"]
    return value


def bearer(access_token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}", **extra}


def mime(message_id: str, to: str = "alice@example.com", subject: str = "Hello") -> bytes:
    return (
        f"From: noreply@contoso.onmicrosoft.com\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\nHi\r\n"
    ).encode()


def send_mime(api: httpx.Client, mailbox: str, access_token: str, raw: bytes) -> httpx.Response:
    return api.post(
        f"/v1.0/users/{mailbox}/sendMail",
        content=base64.b64encode(raw),
        headers=bearer(access_token, **{"Content-Type": "text/plain"}),
    )


def quoted(value: str) -> str:
    return value.replace("'", "''")


def find_sent(api: httpx.Client, mailbox: str, access_token: str, message_id: str, **extra: str) -> httpx.Response:
    params = {
        "$filter": f"internetMessageId eq '{quoted(message_id)}'",
        "$select": "id,internetMessageId,sentDateTime",
        **extra,
    }
    return api.get(f"/v1.0/users/{mailbox}/mailFolders/sentitems/messages", params=params, headers=bearer(access_token))


def wait_for(condition: Callable[[], Any], seconds: float = 60.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy; generous timeouts, no timing assertions."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {seconds} s")
        time.sleep(0.05)
