"""``m365relay serve``: the SMTP relay, the HTTP app and the dispatcher in one process, stopped cleanly by
SIGTERM/SIGINT (the dispatcher finishes or releases in-flight mail; nothing accepted is lost). Setting the
``reload`` event (cli/serve.py does on SIGHUP) re-reads the SMTP TLS certificate and key; nothing is closed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn

from .runtime import Runtime
from .web import create_app

if TYPE_CHECKING:
    from .ingress.smtp import SmtpServer

log = logging.getLogger("m365relay.serve")


@dataclass(frozen=True)
class Endpoints:
    http_url: str | None
    smtp_host: str | None
    smtp_port: int | None


async def serve(
    runtime: Runtime,
    stop: asyncio.Event,
    *,
    with_http: bool = True,
    with_smtp: bool = True,
    with_worker: bool = True,
    on_ready: Callable[[Endpoints], None] | None = None,
    reload: asyncio.Event | None = None,
) -> None:
    s = runtime.settings
    dispatcher = runtime.dispatcher() if with_worker else None
    tasks: list[asyncio.Task[None]] = []
    http_server: uvicorn.Server | None = None
    smtp_server = None
    try:
        if dispatcher is not None:
            tasks.append(asyncio.create_task(dispatcher.run(stop), name="dispatcher"))
            tasks.append(asyncio.create_task(runtime.webhook_deliverer().run(stop), name="webhooks"))
        if with_http:
            config = uvicorn.Config(
                create_app(runtime, dispatcher=dispatcher), host=s.http_host, port=s.http_port,
                log_level="warning", access_log=False, lifespan="on", server_header=False,
                log_config=None,  # uvicorn's warnings go through our handler: the same format (text or JSON)
                # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any local process could then
                # pose as any address (e.g. past the sign-in lockout). Only configured proxies are believed.
                proxy_headers=bool(s.trusted_proxies), forwarded_allow_ips=list(s.trusted_proxies),
            )  # fmt: skip
            http_server = _QuietServer(config)
            tasks.append(asyncio.create_task(http_server.serve(), name="http"))
            while not http_server.started:
                if tasks[-1].done():
                    tasks[-1].result()  # raises the bind error
                await asyncio.sleep(0.02)
        if with_smtp:
            from .ingress.smtp import SmtpServer

            smtp_server = SmtpServer(runtime)
            await smtp_server.start()
            if reload is not None:
                tasks.append(asyncio.create_task(_reload_tls_on(reload, stop, smtp_server), name="tls-reload"))
        if on_ready is not None:
            on_ready(
                Endpoints(
                    http_url=f"http://{s.http_host}:{_bound_port(http_server) or s.http_port}" if http_server else None,
                    smtp_host=s.smtp_host if smtp_server else None,
                    smtp_port=smtp_server.port if smtp_server else None,
                )
            )
        await stop.wait()
    finally:
        stop.set()
        if smtp_server is not None:
            await smtp_server.stop()
        if http_server is not None:
            http_server.should_exit = True
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runtime.sender.aclose()


async def _reload_tls_on(request: asyncio.Event, stop: asyncio.Event, smtp_server: SmtpServer) -> None:
    """Each time ``request`` is set, reload the SMTP certificate, until ``stop``. Requests that arrive while
    a reload runs are folded into one more reload, so the files read last always win."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            requested = asyncio.ensure_future(request.wait())
            await asyncio.wait({requested, stopping}, return_when=asyncio.FIRST_COMPLETED)
            requested.cancel()
            if stop.is_set():
                return
            request.clear()
            await smtp_server.reload_tls()
    finally:
        stopping.cancel()


class _QuietServer(uvicorn.Server):
    """uvicorn, minus its own signal handling: ``serve`` owns SIGTERM/SIGINT and stops every part in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bound_port(server: uvicorn.Server | None) -> int | None:
    if server is None or not server.servers:
        return None
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return None
