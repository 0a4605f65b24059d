"""HTTP API ingest: accepted messages per second (202 answers, each after its commit) from 1 and 32
concurrent clients posting small JSON messages to ``POST /api/v1/messages``. The clients are lean
keep-alive HTTP/1.1 connections written on asyncio streams (as the SMTP bench's are), so the figure is the
relay's cost per request rather than a Python HTTP client's.

The relay (``create_app`` under uvicorn, one process, dispatcher off) runs in a child process so that its
CPU is not the clients'; the database is SQLite (WAL, synchronous=FULL) in a temporary home — and also
PostgreSQL when M365RELAY_TEST_DATABASE_URL is set. Figures are medians of 3 runs.

    python -m bench.api_ingest [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, median_of, pg_schema, row

RUNS = 3
CONCURRENCY = (1, 32)
MESSAGE = {
    "to": ["someone@example.com"],
    "subject": "Your case was updated",
    "text": "Case 4711 has a new comment. " * 20,
}  # about 1 KB as MIME


def _settings(home: Path, database_url: str | None) -> Any:
    from m365relay.settings import load_settings

    # No rate limit here: the figure is the relay's ingest capacity, not a key's allowance.
    return load_settings(environ={}, home=home, database_url=database_url, api_rate_limit=1e9)


def prepare(home: Path, database_url: str | None) -> str:
    """A connector and an API key in a fresh database; returns the key."""
    from m365relay.access.api_keys import ApiKeyStore
    from m365relay.connectors import ConnectorUpdate
    from m365relay.runtime import Runtime

    runtime = Runtime(_settings(home, database_url))
    try:
        runtime.connectors.save(
            "default",
            ConnectorUpdate(
                client_id="4e7a1d93-c2b8-4f60-9a15-8d3c6e2b0f71",
                tenant_id="contoso.onmicrosoft.com",
                user_name="app@contoso.com",
            ),
        )
        return ApiKeyStore(runtime.db).create("bench", ["send"]).token
    finally:
        runtime.close()


def serve(home: Path, database_url: str | None, port: int) -> None:
    """The child process: the app as ``serve`` runs it, without SMTP and dispatcher."""
    import uvicorn

    from m365relay.runtime import Runtime
    from m365relay.web import create_app

    runtime = Runtime(_settings(home, database_url))
    try:
        uvicorn.run(
            create_app(runtime),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=60,  # a pooled client connection must not be closed under it between two posts
        )
    finally:
        runtime.close()


class Server:
    def __init__(self, home: Path, database_url: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "bench.api_ingest", "--serve", str(home), str(self.port), database_url or ""]
        self.log = home / "server.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:  # show why the server failed, if it said
            sys.stderr.write(self.log.read_text("utf-8", "replace")[-3000:])
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)


async def _raw_client(port: int, request: bytes, count: int, statuses: list[int]) -> None:
    """One keep-alive HTTP/1.1 connection posting the same prepared request ``count`` times, one at a time.
    Hand-written (like the SMTP bench's client) so that the figure is the relay's: an httpx client spends
    more CPU per request than the server does, and on 2 shared cores it would be the thing measured."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if status != 202:
                sys.stderr.write(f"refused: {status} {body[:300]!r}\n")
            statuses.append(status)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _post_all(url: str, key: str, count: int, concurrency: int) -> float:
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps(MESSAGE).encode()
    request = (
        f"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    warm: list[int] = []
    await _raw_client(port, request, 1, warm)  # warm the server's caches
    per_client = count // concurrency
    statuses: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(_raw_client(port, request, per_client, statuses) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    refused = [s for s in statuses + warm if s != 202]
    if refused:
        raise RuntimeError(f"{len(refused)} requests were not accepted: {sorted(set(refused))}")
    return len(statuses) / elapsed


def measure(database_url: str | None, backend: str, quick: bool) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        home = Path(tmp)
        key = prepare(home, database_url)
        with Server(home, database_url) as server:
            for concurrency in CONCURRENCY:
                count = (200 if quick else 1000) if concurrency == 1 else (640 if quick else 3200)
                rate, runs = median_of(
                    RUNS, lambda c=concurrency, n=count: asyncio.run(_post_all(server.url, key, n, c))
                )
                rows.append(
                    row(
                        "api_ingest",
                        f"{backend}, {concurrency} client{'s' if concurrency > 1 else ''}",
                        round(rate),
                        "messages/s",
                        notes=f"JSON ~1 KB, 202 after commit; runs {', '.join(str(round(r)) for r in runs)}; "
                        f"spread {round(statistics.pstdev(runs))}",
                    )
                )
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows = measure(None, "SQLite", quick)
    with pg_schema() as pg_url:
        if pg_url:
            rows += measure(pg_url, "PostgreSQL", quick)
    return rows


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"]:
        serve(Path(argv[1]), argv[3] or None, int(argv[2]))
        return
    from bench.__main__ import print_rows

    print_rows(run(quick="--quick" in argv))


if __name__ == "__main__":
    main(sys.argv[1:])
