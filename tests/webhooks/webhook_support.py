"""Helpers for the webhook tests: a real HTTP receiver on 127.0.0.1 and a runner for the relay's loops."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from m365relay.events.endpoints import IssuedEndpoint
from m365relay.runtime import Runtime


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        parsed = json.loads(self.body)
        assert isinstance(parsed, dict)
        return parsed


class Receiver:
    """Answers every POST with ``status`` (changeable while it runs) and keeps what it was sent."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.status
                with receiver.lock:
                    receiver.requests.append(
                        Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/m365relay"

    def accepted(self) -> list[Request]:
        """Requests answered 2xx: what the application has really received."""
        with self.lock:
            return [r for r in self.requests if 200 <= r.answered < 300]

    def types(self) -> list[str]:
        return [r.event["type"] for r in self.accepted()]


@contextmanager
def receiver(status: int = 204) -> Iterator[Receiver]:
    r = Receiver(status)
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def run_loops(
    runtime: Runtime,
    condition: Callable[[], bool],
    *,
    seconds: float = 90,
    dispatch: bool = True,
    owner: str | None = None,
) -> None:
    """Run the real dispatcher (optional) and the webhook delivery loop until ``condition()`` holds."""

    async def go() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(runtime.webhook_deliverer(owner=owner).run(stop))]
        if dispatch:
            tasks.append(asyncio.create_task(runtime.dispatcher().run(stop)))
        try:
            async with asyncio.timeout(seconds):
                while not await asyncio.to_thread(condition):
                    for task in tasks:
                        if task.done():
                            task.result()
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            for task in tasks:
                await task
            await runtime.sender.aclose()

    asyncio.run(go())


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def add_active(
    runtime: Runtime, url: str, events: str | list[str] | None, connector: str = "default"
) -> IssuedEndpoint:
    """Add an endpoint and wait until it takes events (ACTIVATION_DELAY after adding: events/fanout.py)."""
    issued = runtime.webhooks.add(url, events, connector)
    wait_for(lambda: runtime.clock.now() >= issued.endpoint.active_from, seconds=30)
    return issued
