"""Two processes' Inbox readers on one PostgreSQL database and one mailbox: each bounce is recorded once."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from api_support import drain
from delivery_support import TENANT_DOMAIN
from sqlalchemy import select

from m365relay.db.models import MessageEventRow
from m365relay.graph.mime import OutgoingMessage
from m365relay.runtime import Runtime
from support import SandboxAdmin, connector_update, make_settings


def test_two_readers_record_each_bounce_once(tmp_path: Path, pg_url: str, admin: SandboxAdmin) -> None:
    admin.grant("Mail.Send", "Mail.Read")
    admin.client.put("/_sandbox/inbox/settings", json={"ndr_delay_seconds": 0}).raise_for_status()
    one = Runtime(make_settings(tmp_path / "one", pg_url))
    two = Runtime(make_settings(tmp_path / "two", pg_url))
    try:
        connector = one.connectors.save("default", connector_update(admin.server))
        ids = []
        for n in range(6):
            to = f"nobody{n}@{TENANT_DOMAIN}" if n % 2 else f"x{n}@bad.invalid"
            raw = f"From: {connector.user_name}\r\nTo: {to}\r\nSubject: n{n}\r\n\r\nHi\r\n".encode()
            ids.append(one.outbox.enqueue(connector.id, OutgoingMessage.from_bytes(raw)).id)
        drain(one)
        # Both "processes" read the same mailbox at the same time, several rounds each.
        counts: list[int] = []
        barrier = threading.Barrier(2)

        def reader(runtime: Runtime, owner: str) -> None:
            config = runtime.connectors.get("default")
            inbox = runtime.inbox_reader(runtime.dispatcher(owner=owner))

            async def go() -> None:
                try:
                    for _ in range(5):
                        counts.append(await inbox.read(config))
                        await asyncio.sleep(0.05)
                finally:
                    await inbox.gate.aclose()
                    await runtime.sender.aclose()

            barrier.wait()
            asyncio.run(go())

        threads = [threading.Thread(target=reader, args=(rt, f"p{i}")) for i, rt in enumerate((one, two))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        # Whatever the drain's own reader recorded plus both readers' rounds: six bounces, once each.
        with one.db.read() as session:
            events = list(session.scalars(select(MessageEventRow).where(MessageEventRow.kind == "bounced")))
        assert sorted(e.message_id for e in events) == sorted(ids)
        statuses = sorted(json.loads(e.detail or "{}")["status"] for e in events)
        assert statuses == ["5.1.1"] * 3 + ["5.1.10"] * 3
        assert len(one.suppressions.list()) == 6
    finally:
        one.close()
        two.close()
