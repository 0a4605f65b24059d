"""`SandboxServer`: run the sandbox with uvicorn over HTTPS, in a background thread or the foreground."""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import build_app
from .clock import Clock
from .directory import DEFAULT_TOKEN_LIFETIME
from .pki import ensure_pki
from .seed import demo_info, load_demo_seed, load_seed_file
from .sentitems_store import DEFAULT_DELAY_SECONDS
from .state import ConnectionRegistry, Sandbox, SandboxSettings

DEMO_INFO_FILE = "demo.json"


def tracking_protocol(registry: ConnectionRegistry) -> type[H11Protocol]:
    """An h11 protocol that registers its transport, so a `reset` fault can abort that connection."""

    class TrackingH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            registry.add(self.client, transport)

        def connection_lost(self, exc: Exception | None) -> None:
            registry.remove(self.client)
            super().connection_lost(exc)

    return TrackingH11Protocol


class _NotifyingServer(uvicorn.Server):
    """uvicorn's server, calling back once the socket accepts connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


class SandboxServer:
    """A running sandbox: `start()` in a thread (tests), or `serve_forever()` in the foreground (CLI)."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        *,
        seed: Path | dict[str, Any] | None = None,
        demo: bool = False,
        latency_ms: float = 0,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        cloud: str = "global",
        host: str = "127.0.0.1",
        sent_items_delay: float = DEFAULT_DELAY_SECONDS,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.demo = demo
        self._seed_source = seed
        self._token_lifetime = token_lifetime
        self.settings = SandboxSettings(
            self.data_dir, cloud=cloud, latency_ms=float(latency_ms), demo=demo, sent_items_delay=sent_items_delay
        )
        self.sandbox: Sandbox | None = None
        self.url = ""
        self.ca_file = self.data_dir / "ca.pem"
        self.demo_info: dict[str, Any] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.on_ready: Callable[[], None] | None = None

    def _seed(self) -> dict[str, Any]:
        source = self._seed_source
        seed: dict[str, Any]
        if isinstance(source, dict):
            seed = copy.deepcopy(source)
        elif source is not None:
            seed = load_seed_file(Path(source))
        elif self.demo:
            seed = load_demo_seed(self.data_dir, Clock())
        else:
            seed = {}
        if self._token_lifetime != DEFAULT_TOKEN_LIFETIME or "token_lifetime" not in seed:
            seed["token_lifetime"] = self._token_lifetime
        return seed

    def _prepare(self) -> uvicorn.Server:
        if self._server is not None:
            raise RuntimeError("the sandbox is already started")
        pki = ensure_pki(self.data_dir)
        seed = self._seed()
        sandbox = Sandbox(self.settings, pki, seed)
        # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets whose proto says TCP, and with Nagle on
        # every response with a body (headers and body are two writes) waited ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        shown_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        self.url = sandbox.base_url = f"https://{shown_host}:{self.port}"
        self.ca_file = pki.ca_file
        if self.demo and seed.get("tenants") and seed.get("apps"):
            self.demo_info = demo_info(seed, self.url, pki.ca_file)
            sandbox.demo_info = self.demo_info
        self.sandbox = sandbox
        config = uvicorn.Config(
            build_app(sandbox),
            ssl_certfile=str(pki.server_cert_file),
            ssl_keyfile=str(pki.server_key_file),
            http=tracking_protocol(sandbox.connections),
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            loop="asyncio",
        )
        self._server = _NotifyingServer(config, self._started)
        return self._server

    def _started(self) -> None:
        """Written only once the port accepts connections, so scripts may poll for demo.json."""
        if self.demo_info:
            path = self.data_dir / DEMO_INFO_FILE
            path.write_text(json.dumps(self.demo_info, indent=2), "utf-8")
            path.chmod(0o600)  # it holds a secret value
        if self.on_ready is not None:
            self.on_ready()

    def start(self) -> SandboxServer:
        """Serve in a background thread; return once the port accepts connections."""
        server = self._prepare()
        assert self._socket is not None
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._socket]}, name="m365relay-sandbox", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (uvicorn installs the handlers)."""
        server = self._prepare()
        assert self._socket is not None
        try:
            server.run(sockets=[self._socket])
        finally:
            self._server = None

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
