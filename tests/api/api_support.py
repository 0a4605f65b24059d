"""Helpers for the HTTP API tests: the real app under uvicorn on a free 127.0.0.1 port, API keys of each
scope, httpx clients that carry them, and the dispatcher run on demand (``drain``), as ``serve`` would."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from m365relay.access.api_keys import ApiKeyStore
from m365relay.connectors import ConnectorConfig
from m365relay.runtime import Runtime
from m365relay.settings import Settings, load_settings
from m365relay.web import create_app

FAST = {
    "poll_interval": 0.05,
    "retry_base_seconds": 0.2,
    "retry_max_seconds": 2.0,
    "probe_base_seconds": 0.2,
    "probe_max_seconds": 1.0,
    "api_rate_limit": 10_000.0,  # the rate-limit tests build their own server with a small one
}


def api_settings(home: Path, **overrides: Any) -> Settings:
    return load_settings(environ={}, home=home, **{**FAST, **overrides})


class ApiServer:
    """uvicorn serving ``app`` in a background thread, as ``serve`` does in its event loop."""

    def __init__(self, app: FastAPI) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


@dataclass
class Api:
    url: str
    runtime: Runtime
    connector: ConnectorConfig
    tokens: dict[str, str]
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"{self.url}/api/v1"

    def client(self, key: str | None = "app", **kw: Any) -> httpx.Client:
        """A client for the API with the named key (app: send+read, sender, reader, admin), or none."""
        headers = {"Authorization": f"Bearer {self.tokens[key]}"} if key else {}
        client = httpx.Client(base_url=self.base, headers=headers, timeout=30, **kw)
        self.clients.append(client)
        return client

    def add_key(self, name: str, *scopes: str, connector_id: int | None = None) -> str:
        issued = ApiKeyStore(self.runtime.db).create(name, list(scopes), connector_id=connector_id)
        self.tokens[name] = issued.token
        return issued.token


def serve_api(runtime: Runtime, connector: ConnectorConfig) -> Iterator[Api]:
    server = ApiServer(create_app(runtime)).start()
    api = Api(server.url, runtime, connector, {})
    api.add_key("app", "send", "read")
    api.add_key("sender", "send")
    api.add_key("reader", "read")
    api.add_key("admin", "admin")
    try:
        yield api
    finally:
        for client in api.clients:
            client.close()
        server.stop()


def drain(runtime: Runtime, seconds: float = 60) -> None:
    """Run the dispatcher's real loop until nothing is queued, deferred or being sent."""
    dispatcher = runtime.dispatcher()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            async with asyncio.timeout(seconds):
                while await asyncio.to_thread(runtime.outbox.pending_count):
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task
            await runtime.sender.aclose()

    asyncio.run(go())
