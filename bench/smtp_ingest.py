"""SMTP ingest: messages per second until ``250`` — each one committed durably to the outbox — for 1 KB and
100 KB messages over 1 and 16 concurrent connections (several messages per connection).

The relay is the real thing: ``m365relay serve --no-http --no-worker`` in a child process, SQLite in a
temporary home, the client's address on the allowlist (the load generators cannot AUTH). The load comes
from an asyncio client in this process and, when Postfix is installed, from Postfix's ``smtp-source``,
which also drives Postfix's ``smtp-sink`` (accepts and discards, no disk) on another local port: the
baseline, and the ratio relay / smtp-sink. Nothing is installed from here (``apt-get install postfix``).

    python -m bench.smtp_ingest [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
SIZES = {"1 KB": 1024, "100 KB": 100 * 1024}
CONNECTIONS = (1, 16)
RUNS = 3
SENDER, RECIPIENT = "app@example.com", "someone@example.com"


def row(scenario: str, metric: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"scenario": scenario, "metric": metric, "value": value, "unit": unit, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def message_bytes(size: int) -> bytes:
    """A plain RFC 5322 message of about ``size`` bytes, 76-character lines, CRLF line ends."""
    head = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: ingest benchmark\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def wait_for_smtp(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            if s.recv(512).startswith(b"220"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


@contextlib.contextmanager
def stopped_at_exit(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def relay_server() -> Iterator[int]:
    """``m365relay serve`` (SMTP only, no dispatcher) on SQLite in a temporary home; yields its port."""
    from m365relay.connectors import ConnectorUpdate
    from m365relay.runtime import Runtime
    from m365relay.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="bench-smtp-") as tmp:
        home = Path(tmp) / "home"
        runtime = Runtime(load_settings(environ={}, home=home))
        try:
            runtime.connectors.save(
                "default",
                ConnectorUpdate(
                    client_id=str(uuid.uuid4()),
                    tenant_id=str(uuid.uuid4()),
                    user_name="noreply@contoso.com",
                    secret="abcQ~" + "x1" * 16 + "yz",
                    secret_expires=date.today() + timedelta(days=300),
                ),
            )
        finally:
            runtime.close()
        port = free_port()
        env = {
            **os.environ,
            "M365RELAY_HOME": str(home),
            "M365RELAY_SMTP_ALLOWED_NETWORKS": "127.0.0.1/32",
            "M365RELAY_LOG_LEVEL": "warning",
            "M365RELAY_MAX_QUEUE_DEPTH": "100000000",
        }
        env.pop("M365RELAY_CONFIG", None)
        env.pop("M365RELAY_DATABASE_URL", None)
        command = [sys.executable, "-m", "m365relay", "serve", "--no-http", "--no-worker", "--smtp-port", str(port)]
        with (Path(tmp) / "serve.log").open("wb") as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            with stopped_at_exit(proc):
                try:
                    wait_for_smtp(port, proc)
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}: {(Path(tmp) / 'serve.log').read_text()[-2000:]}") from exc
                yield port


@contextlib.contextmanager
def sink_server() -> Iterator[int]:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to keep root privileges
    proc = subprocess.Popen([SMTP_SINK, *user, f"127.0.0.1:{port}", "256"], stdout=subprocess.DEVNULL)
    with stopped_at_exit(proc):
        wait_for_smtp(port, proc)
        yield port


# -- the asyncio load generator -------------------------------------------------------------------------


async def _reply(reader: asyncio.StreamReader, expected: int) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            break
    if int(line[:3]) != expected:
        raise RuntimeError(f"expected {expected}, got {line!r}")


async def _session(port: int, data: bytes, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        await _reply(reader, 220)
        for command, expected in ((b"EHLO bench.example\r\n", 250),):
            writer.write(command)
            await _reply(reader, expected)
        for _ in range(count):  # one command at a time, as smtp-source does (no pipelining)
            for command, expected in (
                (f"MAIL FROM:<{SENDER}>\r\n".encode(), 250),
                (f"RCPT TO:<{RECIPIENT}>\r\n".encode(), 250),
                (b"DATA\r\n", 354),
            ):
                writer.write(command)
                await _reply(reader, expected)
            writer.write(data)
            await _reply(reader, 250)
        writer.write(b"QUIT\r\n")
        await _reply(reader, 221)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def asyncio_rate(port: int, message: bytes, connections: int, total: int) -> float:
    data = message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    per_connection = total // connections

    async def go() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(_session(port, data, per_connection) for _ in range(connections)))
        return per_connection * connections / (time.perf_counter() - started)

    return asyncio.run(go())


def smtp_source_rate(port: int, message_file: Path, connections: int, total: int) -> float:
    command = [
        SMTP_SOURCE,
        "-d",
        "-s",
        str(connections),
        "-m",
        str(total),
        "-F",
        str(message_file),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        "-M",
        "bench.example",
        f"127.0.0.1:{port}",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=600)
    return total / (time.perf_counter() - started)


def median(runs: int, measure: Any) -> float:
    measure()  # warm-up: first connections, SQLite page cache
    return statistics.median(measure() for _ in range(runs))


def totals(size: int, connections: int, quick: bool) -> int:
    base = 600 if size <= 1024 else 160
    if connections > 1:
        base *= 3
    return max(connections * 4, base // (4 if quick else 1))


def run(quick: bool = False) -> list[dict[str, Any]]:
    have_postfix = Path(SMTP_SOURCE).exists() and Path(SMTP_SINK).exists()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-msg-") as tmp:
        for label, size in SIZES.items():
            message = message_bytes(size)
            message_file = Path(tmp) / f"{size}.eml"
            message_file.write_bytes(message.replace(b"\r\n", b"\n"))  # smtp-source appends CRLF per line
            for connections in CONNECTIONS:
                total = totals(size, connections, quick)
                scenario = f"SMTP ingest, {label}, {connections} connection(s)"
                notes = f"{total} messages/run, SQLite, each 250 after a durable commit; median of {RUNS}"
                with relay_server() as port:
                    rate = median(RUNS, lambda p=port, m=message, c=connections, t=total: asyncio_rate(p, m, c, t))
                    rows.append(row(scenario, "messages/s (asyncio client)", round(rate, 1), "msg/s", notes=notes))
                    if not have_postfix:
                        continue
                    relay = median(
                        RUNS, lambda p=port, f=message_file, c=connections, t=total: smtp_source_rate(p, f, c, t)
                    )
                with sink_server() as sink_port:
                    sink = median(
                        RUNS, lambda p=sink_port, f=message_file, c=connections, t=total: smtp_source_rate(p, f, c, t)
                    )
                rows.append(
                    row(
                        scenario,
                        "messages/s (smtp-source)",
                        round(relay, 1),
                        "msg/s",
                        ratio=round(relay / sink, 4),
                        baseline=f"Postfix smtp-sink {sink:,.0f} msg/s",
                        notes="same load from smtp-source; smtp-sink discards without writing",
                    )
                )
    if not have_postfix:
        missing = f"postfix not installed (no {SMTP_SOURCE}, {SMTP_SINK}): apt-get install postfix"
        rows.append(row("SMTP ingest, Postfix baseline", "skipped", 0, "", notes=missing))
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    try:
        from bench.__main__ import print_rows
    except ImportError:
        for r in rows:
            print(r)
        return
    print_rows(rows)


if __name__ == "__main__":
    _print(run(quick="--quick" in sys.argv))
    if shutil.which("smtp-source") is None and not Path(SMTP_SOURCE).exists():
        print("postfix not installed: no smtp-source/smtp-sink baseline")
