"""Send-as mailboxes (issue 17): one connector, three mailboxes, Graph latency 50 ms. Mail From each goes
through its own /users/{mailbox}/sendMail; with every sendMail through one mailbox answered 429
(Retry-After 600), the other two should keep their full rate (ceiling 4 in flight × 2 ÷ 50 ms = 160 msg/s).

    python -m bench.sendas [--quick]        (SQLite, one dispatcher in this process)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import SandboxProcess, connector_update, row

DOMAIN = "contoso.onmicrosoft.com"
SEND_AS = [f"billing@{DOMAIN}", f"alerts@{DOMAIN}"]
CEILING_TWO = 4 * 2 / 0.050


def measure(per_mailbox: int, throttle_one: bool) -> float:
    """Messages/s of the two unthrottled mailboxes: their messages ÷ the time until all of them are sent."""
    from m365relay.graph import OutgoingMessage
    from m365relay.runtime import Runtime
    from m365relay.settings import load_settings

    with SandboxProcess(latency_ms=50) as sandbox, tempfile.TemporaryDirectory() as tmp:
        sandbox.raise_limits()
        with sandbox.admin() as admin:
            for address in SEND_AS:
                admin.put(f"/_sandbox/mailboxes/{address}", json={"licensed": True}).raise_for_status()
            if throttle_one:
                rule = {"status": 429, "code": "ApplicationThrottled", "retry_after": "600", "mailbox": SEND_AS[0]}
                admin.put("/_sandbox/faults", json={"sendMail": rule}).raise_for_status()
        runtime = Runtime(load_settings(environ={}, home=Path(tmp), poll_interval=0.05))
        connector = runtime.connectors.save("default", replace(connector_update(sandbox), send_as=SEND_AS))
        flowing: list[int] = []
        for i in range(per_mailbox):
            for sender in (connector.user_name, *SEND_AS):
                raw = f"From: {sender}\r\nTo: r{i}@example.com\r\nSubject: send-as {i}\r\n\r\nhello\r\n".encode()
                result = runtime.outbox.enqueue(connector.id, OutgoingMessage.from_bytes(raw), source="bench")
                if sender != SEND_AS[0]:
                    flowing.append(result.id)
        elapsed = asyncio.run(_until_sent(runtime, set(flowing)))
        runtime.close()
        return len(flowing) / elapsed


async def _until_sent(runtime: Any, ids: set[int]) -> float:
    dispatcher = runtime.dispatcher()
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        async with asyncio.timeout(300):
            while True:
                if await asyncio.to_thread(_sent, runtime, ids) >= len(ids):
                    return time.perf_counter() - started
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await runtime.sender.aclose()


def _sent(runtime: Any, ids: set[int]) -> int:
    return sum(1 for r in runtime.outbox.list(status="sent", limit=len(ids) * 2) if r.id in ids)  # ids: flowing only


def run(quick: bool = False) -> list[dict[str, Any]]:
    per_mailbox = 150 if quick else 600
    runs = 1 if quick else 3
    rows = []
    base = statistics.median(measure(per_mailbox, False) for _ in range(runs))
    held = statistics.median(measure(per_mailbox, True) for _ in range(runs))
    for label, rate in (("no faults", base), ("429s on the third mailbox", held)):
        rows.append(
            row(
                f"send-as: 2 of 3 mailboxes of one connector, {label}",
                "messages/s",
                round(rate, 1),
                "msg/s",
                ratio=round(rate / CEILING_TWO, 3),
                baseline=f"ceiling {CEILING_TWO:.0f} msg/s",
                notes=f"{rate / base:.2f}× the rate without faults" if rate is held else "SQLite, 1 process",
            )
        )
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run(quick="--quick" in sys.argv))
