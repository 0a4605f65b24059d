"""``m365relay demo`` — the README's first command."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from .. import logs
from .state import state

if TYPE_CHECKING:
    from ..demo import DemoInfo

out = Console(highlight=False, soft_wrap=True)


def demo_command(
    ctx: typer.Context,
    http_port: Annotated[
        int | None, typer.Option(help="HTTP port (API, admin UI); default 8025, 0 = any free port.", metavar="PORT")
    ] = None,
    smtp_port: Annotated[
        int | None, typer.Option(help="SMTP port; default 2525, 0 = any free port.", metavar="PORT")
    ] = None,
    sandbox_port: Annotated[
        int | None, typer.Option(help="Sandbox HTTPS port; default 8443, 0 = any free port.", metavar="PORT")
    ] = None,
    send_test: Annotated[
        bool, typer.Option("--send-test", help="Send one test message through the SMTP relay once it is up.")
    ] = False,
) -> None:
    """Try m365relay without Microsoft 365: a local sandbox tenant, a connector configured against it,
    a relay user, an administrator, and the relay itself (SMTP, HTTP API, admin UI, dispatcher).

    Prints how to send a message (swaks and Python one-liners) and where to watch it arrive; HOME/demo.json too.

    Default ports when free, free ones otherwise. Runs until Ctrl-C or SIGTERM. Running it again reuses HOME.
    """
    from ..demo import (
        DEFAULT_HTTP_PORT,
        DEFAULT_SANDBOX_PORT,
        DEFAULT_SMTP_PORT,
        choose_port,
        concrete_port,
        run_demo,
    )

    cli = state(ctx)
    http = concrete_port(choose_port(http_port, DEFAULT_HTTP_PORT, "HTTP"))  # the consent Redirect URL has it
    smtp = choose_port(smtp_port, DEFAULT_SMTP_PORT, "SMTP")
    sandbox = choose_port(sandbox_port, DEFAULT_SANDBOX_PORT, "sandbox")
    for choice in (http, smtp, sandbox):
        if choice.note:
            out.print(f"[yellow]note:[/] {choice.note}")
    cli.override(http_host="127.0.0.1", http_port=http.port, smtp_host="127.0.0.1", smtp_port=smtp.port)
    settings = cli.settings
    logs.configure(settings)
    out.print(f"starting the demo in {settings.home.resolve()} …")

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        background: set[asyncio.Task[None]] = set()

        def start_test(info: DemoInfo) -> None:
            task = loop.create_task(_send_test(info))
            background.add(task)
            task.add_done_callback(background.discard)

        def announce(info: DemoInfo) -> None:
            _announce(info, settings.home)

        try:
            await run_demo(settings, sandbox, stop, announce, send_test=start_test if send_test else None)
        finally:
            for task in list(background):
                task.cancel()

    asyncio.run(go())
    out.print("demo stopped")


async def _send_test(info: DemoInfo) -> None:
    import smtplib

    from ..demo import send_test_message

    try:
        reply = await asyncio.to_thread(send_test_message, info)
    except (OSError, smtplib.SMTPException) as exc:
        out.print(f"[red]test message not sent:[/] {type(exc).__name__}: {exc}")
        return
    out.print(f"[green]test message sent[/] through the relay ({reply}); watch it arrive at {info.sandbox_url}/")


def _announce(info: DemoInfo, home: Path) -> None:
    from ..demo import DEMO_FILE

    rows = [
        ("SMTP relay", f"{info.smtp_host}:{info.smtp_port}   user {info.smtp_user}   password {info.smtp_password}"),
        ("", "STARTTLS is offered; AUTH without TLS is accepted from this machine (loopback) only"),
        ("mailbox", f"{info.mailbox}   (mail is sent from it; the application's From goes to Reply-To)"),
        ("also sends from", f"{info.send_as}   (send-as: From {info.send_as} goes through that mailbox, From kept)"),
        ("sandbox viewer", f"{info.sandbox_url}/   (its CA certificate: {info.sandbox_ca_file})"),
        ("admin UI", f"{info.admin_url}   user {info.admin_user}   password {info.admin_password}"),
        ("HTTP API", info.api_url),
    ]
    out.print()
    out.print("[bold green]m365relay demo is running[/] — Ctrl-C stops it")
    out.print()
    for label, text in rows:
        out.print(f"  {label:<15} {text}", markup=False)
    out.print()
    out.print("Send a message with swaks:")
    out.print(f"  {info.swaks}", markup=False)
    out.print("or with Python's standard library:")
    out.print(f"  {info.python}", markup=False)
    out.print("Receive its events as signed webhooks (any local HTTP receiver; docs/api.md shows verification):")
    out.print(
        f"  m365relay --home {home} webhook add http://127.0.0.1:9000/hooks --events sent,bounced,failed", markup=False
    )
    out.print()
    domain = info.mailbox.rpartition("@")[2]
    out.print("Try a bounce: send to [bold]nobody@" + domain + "[/] (no such mailbox) or [bold]x@bad.invalid[/];")
    out.print("the sandbox files Exchange's non-delivery report into the mailbox's Inbox a couple of seconds later,")
    out.print("the relay reads it (the demo app has Mail.Read) and the recipient turns bounced — see it with")
    out.print(
        f"  m365relay --home {home} queue ls --status bounced   and   m365relay --home {home} queue show ID",
        markup=False,
    )
    out.print("The address is then suppressed: the next message to it is refused (550 5.1.1 / HTTP 422) until")
    out.print(f"  m365relay --home {home} suppression rm ADDRESS", markup=False)
    out.print()
    out.print("To see an in-doubt send checked in Sent Items (the demo app holds Mail.ReadBasic.All), make the")
    out.print("sandbox lose the next answer, send a message, then read its history (`m365relay queue show ID`):")
    drop = """'{"sendMail": {"kind": "drop", "count": 1}}'"""
    out.print(
        f"  curl --cacert {info.sandbox_ca_file} -X PUT {info.sandbox_url}/_sandbox/faults -d {drop}", markup=False
    )
    out.print()
    out.print(
        f"To try the second mailbox, send From {info.send_as} (swaks: --from {info.send_as}); the sandbox", markup=False
    )
    out.print(f"viewer shows it sent by {info.send_as} itself, not by {info.mailbox}.", markup=False)
    out.print()
    out.print(f"The same details as JSON, for scripts: {(home / DEMO_FILE).resolve()}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
