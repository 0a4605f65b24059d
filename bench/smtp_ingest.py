"""SMTP ingest: messages per second until ``250`` — each one committed durably before the reply.

The relay is the real thing: ``m365relay serve --no-http --no-worker`` in a child process, SQLite in a
temporary home, the client's address on the allowlist (the load generators cannot AUTH). Its baseline is a
throwaway **Postfix with a real queue** (``bench/postfix.py``: cleanup fsyncs the queue file before 250, every
message held, nothing delivered): Postfix's ``smtp-source`` drives both servers with the same load, in
interleaved pairs (relay, Postfix, relay, Postfix …) so both see the same machine noise; the ratio is the
median of the pairs' ratios. ``smtp-sink`` (accepts and discards, writes nothing) is shown only as the wire's
ceiling. The relay's own asyncio client gives figures without Postfix. Nothing is installed from here
(``apt-get install postfix``); without it the Postfix rows say "skipped".

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
            "M365RELAY_SMTP_MAX_CONNECTIONS_PER_CLIENT": "10000",  # the load comes from one address
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


def smtp_source_rate(port: int, message_file: Path, sessions: int, total: int, *, reuse: bool) -> float:
    """Postfix's load generator: ``sessions`` parallel sessions, ``total`` messages, one command at a time;
    ``reuse`` keeps a connection for several messages (``-d``), else each message has its own connection."""
    command = [
        SMTP_SOURCE,
        *(["-d"] if reuse else []),
        "-s",
        str(sessions),
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


# (label, message size, sessions, a connection per message?) — the table, in its order.
SCENARIOS = (
    ("1 KB, 1 session, a connection per message", 1024, 1, False),
    ("1 KB, 16 sessions, a connection per message", 1024, 16, False),
    ("100 KB, 16 sessions, a connection per message", 100 * 1024, 16, False),
    ("1 KB, 16 sessions, many messages per connection", 1024, 16, True),
)


def median(runs: int, measure: Any) -> float:
    measure()  # warm-up: first connections, SQLite page cache
    return statistics.median(measure() for _ in range(runs))


def totals(size: int, connections: int, quick: bool) -> int:
    base = 600 if size <= 1024 else 160
    if connections > 1:
        base *= 3
    return max(connections * 4, base // (4 if quick else 1))


def _interleaved(relay_port: int, postfix_port: int, measure: Any) -> tuple[list[float], list[float]]:
    """RUNS pairs, relay then Postfix, after one warm-up of each: both see the same machine noise."""
    measure(relay_port)
    measure(postfix_port)
    relay, postfix = [], []
    for _ in range(RUNS):
        relay.append(measure(relay_port))
        postfix.append(measure(postfix_port))
    return relay, postfix


def run(quick: bool = False) -> list[dict[str, Any]]:
    from bench import postfix as pf

    rows: list[dict[str, Any]] = []
    why_not = pf.available() or (None if Path(SMTP_SOURCE).exists() else "skipped: install postfix (smtp-source)")
    with tempfile.TemporaryDirectory(prefix="bench-msg-") as tmp, relay_server() as port:
        for label, size in SIZES.items():  # the relay's own client: no Postfix needed
            message = message_bytes(size)
            for connections in (1, 16):
                total = totals(size, connections, quick)
                rate = median(RUNS, lambda m=message, c=connections, t=total: asyncio_rate(port, m, c, t))
                rows.append(
                    row(
                        f"SMTP ingest, {label}, {connections} connection(s)",
                        "messages/s (asyncio client, reused connections)",
                        round(rate, 1),
                        "msg/s",
                        notes=f"{total} messages/run, SQLite, each 250 after a durable commit; median of {RUNS}",
                    )
                )
        if why_not:
            rows.append(row("SMTP ingest vs Postfix real queue", why_not, 0, ""))
            return rows
        pf_port = free_port()
        with pf.postfix_server(pf_port) as queue:
            for label, size, sessions, reuse in SCENARIOS:
                message_file = Path(tmp) / f"{size}.eml"
                message_file.write_bytes(message_bytes(size).replace(b"\r\n", b"\n"))  # smtp-source adds CR
                total = totals(size, sessions, quick)
                before = pf.held(queue)
                relay, postfix = _interleaved(
                    port,
                    pf_port,
                    lambda p, f=message_file, s=sessions, t=total, r=reuse: smtp_source_rate(p, f, s, t, reuse=r),
                )
                kept = pf.held(queue) - before
                ratios = [a / b for a, b in zip(relay, postfix, strict=True)]
                rows.append(
                    row(
                        f"SMTP ingest, {label}",
                        "messages/s (smtp-source)",
                        round(statistics.median(relay), 1),
                        "msg/s",
                        ratio=round(statistics.median(ratios), 3),
                        baseline=f"Postfix real queue {statistics.median(postfix):,.0f} msg/s",
                        notes=f"{total} msgs/run, {RUNS} interleaved pairs, median ratio of pairs; "
                        f"Postfix held {kept} (fsync before 250)",
                    )
                )
            with sink_server() as sink_port:  # the wire's ceiling: accepts and writes nothing
                message_file = Path(tmp) / "1024.eml"
                total = totals(1024, 16, quick)
                sink = median(RUNS, lambda: smtp_source_rate(sink_port, message_file, 16, total, reuse=False))
                rows.append(
                    row(
                        "SMTP ingest, 1 KB, 16 sessions, a connection per message",
                        "wire's ceiling (smtp-sink)",
                        round(sink, 1),
                        "msg/s",
                        notes="Postfix smtp-sink discards without writing: no server can beat it",
                    )
                )
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
