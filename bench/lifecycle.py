"""Credential lifecycle benchmarks (issue 8).

* doctor: seconds for ``run_checks`` against a sandbox in a child process — checks 1–5 (discovery, the
  cloud comparison, a fresh token), and all six with ``send_test_to``;
* rotation: a queue of messages dispatched to a sandbox answering after 50 ms, once plainly and once with
  a secret rotation (stage, verify, promote, delete the old secret) a third of the way through: messages
  lost (must be 0), throughput against the plain run, and the longest pause between two sends against
  the plain run's.

    python -m bench.lifecycle [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.common import SandboxProcess, connector_update, median_of, row

LATENCY_MS = 50.0


def _runtime(home: Path) -> Any:
    from m365relay.runtime import Runtime
    from m365relay.settings import load_settings

    return Runtime(load_settings(environ={}, home=home, poll_interval=0.05))


def doctor_seconds(sandbox: SandboxProcess, send_test: bool) -> float:
    from m365relay.doctor import run_checks

    with tempfile.TemporaryDirectory(prefix="bench-doctor-") as tmp:
        runtime = _runtime(Path(tmp))
        try:
            connector = runtime.connectors.save("default", connector_update(sandbox))

            async def go() -> float:
                started = time.perf_counter()
                try:
                    results = await run_checks(
                        runtime, connector, send_test_to="bench@example.com" if send_test else None
                    )
                finally:
                    await runtime.sender.aclose()
                assert not [r for r in results if r.status == "fail"], results
                return time.perf_counter() - started

            return asyncio.run(go())
        finally:
            runtime.close()


def stream(sandbox: SandboxProcess, count: int, rotate: bool) -> dict[str, float]:
    """Dispatch ``count`` queued messages; optionally rotate the secret a third of the way through."""
    from m365relay.connectors import ConnectorUpdate
    from m365relay.graph import OutgoingMessage
    from m365relay.lifecycle import Rotation

    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp, sandbox.admin() as admin:
        admin.post("/_sandbox/reset").raise_for_status()
        admin.put("/_sandbox/latency", json={"ms": LATENCY_MS}).raise_for_status()
        runtime = _runtime(Path(tmp))
        try:
            connector = runtime.connectors.save("default", connector_update(sandbox))
            for n in range(count):
                body = f"From: {connector.user_name}\r\nTo: r{n}@example.com\r\nSubject: {n}\r\n\r\nx\r\n".encode()
                runtime.outbox.enqueue(connector.id, OutgoingMessage.from_bytes(body), source="bench")
            client_id, old_secret = sandbox.demo["client_id"], sandbox.demo["secret_id"]

            async def rotate_when(dispatcher: Any) -> None:
                while dispatcher.stats.sent < count // 3:
                    await asyncio.sleep(0.01)
                new = (await asyncio.to_thread(admin.post, f"/_sandbox/apps/{client_id}/secrets", json={})).json()
                expires = (date.today() + timedelta(days=700)).isoformat()
                await Rotation(runtime.connectors, runtime.tokens).rotate(
                    "default", ConnectorUpdate(secret=new["value"], secret_expires=expires)
                )
                await asyncio.sleep(2.0)  # the admin deletes the old secret in Azure afterwards (docs)
                await asyncio.to_thread(admin.delete, f"/_sandbox/apps/{client_id}/secrets/{old_secret}")

            async def go() -> dict[str, float]:
                dispatcher = runtime.dispatcher()
                stop = asyncio.Event()
                started = time.perf_counter()
                running = asyncio.create_task(dispatcher.run(stop))
                rotation = asyncio.create_task(rotate_when(dispatcher)) if rotate else None
                sent_times: list[float] = []
                last = 0
                try:
                    while dispatcher.stats.sent < count and not dispatcher.stats.paused:
                        if dispatcher.stats.sent != last:
                            sent_times.append(time.perf_counter())
                            last = dispatcher.stats.sent
                        await asyncio.sleep(0.002)
                    elapsed = time.perf_counter() - started
                    if rotation is not None:
                        await rotation
                finally:
                    stop.set()
                    await running
                    await runtime.sender.aclose()
                gaps = [b - a for a, b in itertools.pairwise(sent_times)]
                return {
                    "rate": dispatcher.stats.sent / elapsed,
                    "longest_gap_ms": max(gaps) * 1000,
                    "sent": dispatcher.stats.sent,
                    "failed": dispatcher.stats.failed,
                    "paused": float(bool(dispatcher.stats.paused)),
                }

            figures = asyncio.run(go())
            delivered = admin.get("/_sandbox/messages", params={"limit": count * 2}).json()
            figures["lost"] = count - len({m["subject"] for m in delivered})
            figures["token_failures"] = sum(admin.get("/_sandbox/stats").json().get("token_failures", {}).values())
            return figures
        finally:
            runtime.close()


def run(quick: bool = False) -> list[dict[str, Any]]:
    runs = 3 if quick else 5
    count = 300 if quick else 800
    rows: list[dict[str, Any]] = []
    with SandboxProcess() as sandbox:
        for send_test, label in ((False, "checks 1-5"), (True, "all six (--send-test)")):
            value, _ = median_of(runs, lambda st=send_test: doctor_seconds(sandbox, st))
            rows.append(
                row("doctor", f"run_checks, {label}", round(value * 1000, 1), "ms", notes="sandbox, 0 ms latency")
            )
        plain = [stream(sandbox, count, rotate=False) for _ in range(runs)]
        rotated = [stream(sandbox, count, rotate=True) for _ in range(runs)]

    def med(results: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in results)

    ceiling = 4 / (LATENCY_MS / 1000)
    base_rate, rot_rate = med(plain, "rate"), med(rotated, "rate")
    base_gap, rot_gap = med(plain, "longest_gap_ms"), med(rotated, "longest_gap_ms")
    notes = f"{count} messages, Graph latency {LATENCY_MS:.0f} ms, ceiling {ceiling:.0f}/s"
    lost = int(sum(r["lost"] for r in rotated))
    trouble = int(sum(r["paused"] + r["token_failures"] for r in rotated))
    rows += [
        row("rotation", "messages lost", lost, "messages", notes=f"{runs} runs; must be 0"),
        row("rotation", "connector paused / token failures", trouble, "events", notes="must be 0"),
        row("rotation", "dispatch rate with a rotation", round(rot_rate, 1), "msg/s", ratio=rot_rate / base_rate,
            baseline=f"plain run {base_rate:.1f} msg/s", notes=notes),
        row("rotation", "longest pause between two sends", round(rot_gap, 1), "ms", ratio=rot_gap / base_gap,
            baseline=f"plain run {base_gap:.1f} ms"),
    ]  # fmt: skip
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run(quick="--quick" in sys.argv))
