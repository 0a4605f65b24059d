"""``m365relay serve`` — the whole relay in one process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Annotated

import typer
from rich.console import Console

from .. import logs
from ..sd_notify import Notifier
from ..serve import Endpoints, serve
from .state import state

out = Console(highlight=False)
log = logging.getLogger("m365relay.serve")


def serve_command(
    ctx: typer.Context,
    smtp: Annotated[bool, typer.Option("--smtp/--no-smtp", help="Run the SMTP relay.")] = True,
    http: Annotated[bool, typer.Option("--http/--no-http", help="Run the HTTP API and admin UI.")] = True,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="Run the dispatcher.")] = True,
    http_port: Annotated[int | None, typer.Option(help="HTTP port (default: settings, 8025).")] = None,
    smtp_port: Annotated[int | None, typer.Option(help="SMTP port (default: settings, 2525).")] = None,
) -> None:
    """Run the SMTP relay, the HTTP API + admin UI and the dispatcher until SIGTERM or Ctrl-C.

    Settings come from M365RELAY_* variables and the --config file (see docs/settings.md). Several
    `serve`/`worker` processes may share one PostgreSQL database (M365RELAY_DATABASE_URL).

    SIGHUP re-reads the SMTP TLS certificate and key (open connections stay). Under systemd with
    Type=notify, readiness is reported through NOTIFY_SOCKET.
    """
    cli = state(ctx)
    if http_port is not None or smtp_port is not None:
        cli.override(http_port=http_port, smtp_port=smtp_port)
    logs.configure(cli.settings)
    runtime = cli.runtime
    notifier = Notifier(os.environ.get("NOTIFY_SOCKET"))  # set by systemd for Type=notify, not a setting
    as_json = cli.settings.log_format == "json"

    def ready(endpoints: Endpoints) -> None:
        notifier.notify("READY=1", f"STATUS=SMTP port {endpoints.smtp_port or '-'}, HTTP {endpoints.http_url or '-'}")
        if as_json:  # log shippers want events, not a banner
            extra = {"http_url": endpoints.http_url, "smtp_host": endpoints.smtp_host, "smtp_port": endpoints.smtp_port}
            log.info("ready", extra=extra)
            return
        if endpoints.http_url:
            out.print(f"HTTP   {endpoints.http_url}  (API /api/v1/, admin /admin/, /healthz, /metrics)")
        if endpoints.smtp_port:
            out.print(f"SMTP   {endpoints.smtp_host}:{endpoints.smtp_port}")
        out.print("ready; Ctrl-C or SIGTERM stops (in-flight mail finishes or is released)")

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        reload = asyncio.Event()

        def stopping() -> None:
            if not stop.is_set():
                notifier.notify("STOPPING=1")
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await serve(runtime, stop, with_http=http, with_smtp=smtp, with_worker=worker, on_ready=ready, reload=reload)

    asyncio.run(go())
    if as_json:
        log.info("stopped")
    else:
        out.print("stopped")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
