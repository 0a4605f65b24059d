"""Helpers of the bounce tests: run the Inbox reader, wait for recipient states."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from m365relay.connectors import ConnectorConfig
from m365relay.runtime import Runtime

TENANT_DOMAIN = "contoso.onmicrosoft.com"


def read_inbox(runtime: Runtime, connector: ConnectorConfig, *, owner: str | None = None) -> int:
    """One delta round of the relay's Inbox reader (mailbox/inbox.py) over the connector's mailbox."""
    reader = runtime.inbox_reader(runtime.dispatcher(owner=owner))

    async def go() -> int:
        try:
            return await reader.read(connector)
        finally:
            await reader.gate.aclose()
            await runtime.sender.aclose()

    return asyncio.run(go())


def wait_for_states(
    runtime: Runtime,
    connector: ConnectorConfig,
    client: httpx.Client,
    message_id: int,
    wanted: str,
    *,
    only: str | None = None,
    timeout: float = 60,
) -> list[dict[str, Any]]:
    """Read the Inbox until every recipient of the message (or ``only`` that one) is in state ``wanted``."""
    deadline = time.monotonic() + timeout
    while True:
        recipients: list[dict[str, Any]] = client.get(f"/messages/{message_id}").json()["recipients"]
        if all(r["state"] == wanted for r in recipients if only is None or r["address"] == only):
            return recipients
        assert time.monotonic() < deadline, recipients
        read_inbox(runtime, connector)
        time.sleep(0.1)
