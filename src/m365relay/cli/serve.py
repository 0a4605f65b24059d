"""``m365relay serve`` — the whole relay in one process."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.console import Console

from .. import logs
from ..serve import Endpoints, serve
from .state import state

out = Console(highlight=False)


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
    """
    cli = state(ctx)
    if http_port is not None or smtp_port is not None:
        cli.override(http_port=http_port, smtp_port=smtp_port)
    logs.configure(cli.settings)
    runtime = cli.runtime

    def ready(endpoints: Endpoints) -> None:
        if endpoints.http_url:
            out.print(f"HTTP   {endpoints.http_url}  (API /api/v1/, admin /admin/, /healthz, /metrics)")
        if endpoints.smtp_port:
            out.print(f"SMTP   {endpoints.smtp_host}:{endpoints.smtp_port}")
        out.print("ready; Ctrl-C or SIGTERM stops (in-flight mail finishes or is released)")

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(runtime, stop, with_http=http, with_smtp=smtp, with_worker=worker, on_ready=ready)

    asyncio.run(go())
    out.print("stopped")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
