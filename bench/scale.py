"""Scale-out on PostgreSQL: dispatch with 1, 2 and 4 worker processes sharing one database and four
mailboxes (Graph latency 50 ms; ceiling 4 in flight × 4 mailboxes ÷ 50 ms = 320 msg/s), the token
requests a run makes per 10,000 messages, and the relay's CPU per message sent across 16 mailboxes (ceiling
1,280 msg/s, far above what the CPU allows: the figure that says how many cores a host needs).

CPU per message is the workers' user + system CPU time (``/proc/PID/stat``) between the moment 10 % of the
messages are sent and the moment all are, divided by the messages sent in between: start-up (imports,
migrations, the first token) is left out. The sandbox runs in its own process and is not counted.

    python -m bench.scale [--quick]        (needs M365RELAY_TEST_DATABASE_URL)
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import SandboxProcess, connector_update, pg_schema, row

MAILBOXES = [f"box{i}@contoso.onmicrosoft.com" for i in range(16)]
CEILING = 4 * 4 / 0.050
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return total / TICKS


def _prepare(sandbox: SandboxProcess, home: Path, url: str, count: int, mailboxes: list[str]) -> Any:
    from dataclasses import replace

    from m365relay.graph import OutgoingMessage
    from m365relay.runtime import Runtime
    from m365relay.settings import load_settings

    with sandbox.admin() as admin:
        for address in mailboxes:
            admin.put(f"/_sandbox/mailboxes/{address}", json={"licensed": True}).raise_for_status()
    runtime = Runtime(load_settings(environ={}, home=home, database_url=url))
    connectors = [
        runtime.connectors.save(a.split("@")[0], replace(connector_update(sandbox), user_name=a)) for a in mailboxes
    ]
    for i in range(count):
        c = connectors[i % len(connectors)]
        raw = f"From: {c.user_name}\r\nTo: r{i}@example.com\r\nSubject: scale {i}\r\n\r\nhello\r\n".encode()
        runtime.outbox.enqueue(c.id, OutgoingMessage.from_bytes(raw), source="bench")
    return runtime


def dispatch(processes: int, count: int, latency_ms: float = 50.0, mailboxes: int = 4) -> tuple[float, int, int, float]:
    """(messages/s, token requests, 429s, worker CPU seconds per message) for ``count`` messages."""
    with pg_schema() as url, SandboxProcess(latency_ms=latency_ms) as sandbox, tempfile.TemporaryDirectory() as tmp:
        assert url is not None
        sandbox.raise_limits()
        runtime = _prepare(sandbox, Path(tmp), url, count, MAILBOXES[:mailboxes])
        env = {**os.environ, "M365RELAY_HOME": tmp, "M365RELAY_DATABASE_URL": url, "M365RELAY_POLL_INTERVAL": "0.05"}
        started = time.perf_counter()
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "m365relay", "worker", "--quiet"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(processes)
        ]
        try:
            pids = [w.pid for w in workers]
            mark: tuple[float, int] | None = None
            while pending := runtime.outbox.pending_count():
                if mark is None and count - pending >= count // 10:
                    mark = (cpu_seconds(pids), count - pending)
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu, done = (cpu_seconds(pids) - mark[0], count - mark[1]) if mark else (cpu_seconds(pids), count)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(60)
        sent = runtime.outbox.stats().by_status.get("sent", 0)
        runtime.close()
        if sent != count:
            raise RuntimeError(f"only {sent} of {count} messages were sent")
        with sandbox.admin() as admin:
            stats = admin.get("/_sandbox/stats").json()
        return count / elapsed, int(stats["token_success"]), int(stats["throttled_429"]["total"]), cpu / max(done, 1)


def run(quick: bool = False) -> list[dict[str, Any]]:
    from bench.common import PG_URL

    if not PG_URL:
        return [row("scale-out, PostgreSQL", "skipped", 0, "", notes="set M365RELAY_TEST_DATABASE_URL")]
    count = 800 if quick else 2400
    runs = 1 if quick else 3
    rows, base = [], 0.0
    for processes in (1, 2, 4):
        results = [dispatch(processes, count) for _ in range(runs)]
        rate = statistics.median(r[0] for r in results)
        base = base or rate
        throttled = max(r[2] for r in results)
        rows.append(
            row(
                f"dispatch, {processes} worker process(es), 4 mailboxes, PostgreSQL",
                "messages/s",
                round(rate, 1),
                "msg/s",
                ratio=round(rate / CEILING, 3),
                baseline=f"ceiling {CEILING:.0f} msg/s",
                notes=f"scaling ×{rate / base:.2f} vs 1 process; 429s caused: {throttled}; "
                f"CPU {statistics.median(r[3] for r in results) * 1000:.2f} ms/msg",
            )
        )
    for processes in (1, 2, 4):
        results = [dispatch(processes, count * 2, mailboxes=16) for _ in range(runs)]
        rows.append(
            row(
                f"dispatch CPU, {processes} worker process(es), 16 mailboxes, PostgreSQL",
                "relay CPU per message sent",
                round(statistics.median(r[3] for r in results) * 1000, 3),
                "ms",
                ratio=round(1.0 / (statistics.median(r[3] for r in results) * 1000), 3),
                baseline="target ≤ 1 ms (ratio = 1 ms ÷ figure)",
                notes=f"{statistics.median(r[0] for r in results):.0f} msg/s; sandbox latency 50 ms in its own "
                "process; user+system CPU of the workers after the first 10 % sent",
            )
        )
    tokens_run = 2000 if quick else 10_000
    rate, tokens, _, _ = dispatch(1, tokens_run, latency_ms=0)
    rows.append(
        row(
            "token requests per 10,000 messages",
            "requests",
            round(tokens * 10_000 / tokens_run, 1),
            "requests",
            notes=f"{tokens_run} messages, 4 connectors, 1 process: one token per connector "
            f"per lifetime ({rate:.0f} msg/s at latency 0)",
        )
    )
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run(quick="--quick" in sys.argv))
