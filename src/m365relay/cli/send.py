"""``m365relay send`` — hand one message to the relay (queued by default, or sent at once with --now)."""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..compose import AttachmentSpec, MessageSpec, compose
from ..connectors import DEFAULT_NAME, ConnectorConfig
from ..errors import ValidationError
from ..graph import OutgoingMessage, SendResult
from ..graph.acceptance import accept_ready, ready_rules
from ..runtime import Runtime
from .state import state

out = Console(highlight=False)

Addresses = Annotated[list[str] | None, typer.Option(metavar="ADDRESS", show_default=False)]


def send(
    ctx: typer.Context,
    to: Annotated[
        list[str] | None, typer.Option("--to", help="Recipient (repeat for more).", metavar="ADDRESS")
    ] = None,
    cc: Annotated[list[str] | None, typer.Option("--cc", help="Cc recipient (repeatable).", metavar="ADDRESS")] = None,
    bcc: Annotated[
        list[str] | None, typer.Option("--bcc", help="Bcc recipient (repeatable).", metavar="ADDRESS")
    ] = None,
    subject: Annotated[str, typer.Option(help="Subject line.")] = "",
    text: Annotated[str | None, typer.Option(help="Plain-text body, or @FILE to read it from a file.")] = None,
    html: Annotated[str | None, typer.Option(help="HTML body, or @FILE.")] = None,
    attach: Annotated[
        list[Path] | None,
        typer.Option("--attach", help="Attach a file (repeatable).", metavar="FILE", exists=True, dir_okay=False),
    ] = None,
    sender: Annotated[
        str | None, typer.Option("--from", help="From address (default: the connector's mailbox).")
    ] = None,
    reply_to: Annotated[list[str] | None, typer.Option("--reply-to", help="Reply-To address.")] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="Extra header 'X-Name: value' (repeatable).")
    ] = None,
    importance: Annotated[str | None, typer.Option(help="low, normal or high.")] = None,
    eml: Annotated[
        Path | None,
        typer.Option(help="Send a ready RFC 5322 message file instead of building one.", exists=True, dir_okay=False),
    ] = None,
    connector: Annotated[str, typer.Option(help="Connector to send with.")] = DEFAULT_NAME,
    now: Annotated[
        bool,
        typer.Option(
            "--now", help="Send directly through Graph, bypassing the queue; the exit status says how it went."
        ),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Queue, then wait until the message is sent or fails.")] = False,
    save_to_sent_items: Annotated[
        bool, typer.Option(" /--no-save-to-sent-items", help="Do not keep a copy in the mailbox's Sent Items.")
    ] = True,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Queue this message at most once per key (per connector).")
    ] = None,
) -> None:
    """Send a message from the connector's mailbox.

    By default the message is queued and sent by the worker (`m365relay worker` or `serve`); --wait blocks
    until it is sent or fails. --now sends it directly through Microsoft Graph without the queue.

    [bold]Examples[/]

      m365relay send --to ops@contoso.com --subject "Backup done" --text "All good." --now

      m365relay send --eml notice.eml --wait
    """
    runtime = state(ctx).runtime
    config = runtime.connectors.get(connector)
    if eml is not None:
        if any([to, cc, bcc, subject, text, html, attach, sender, reply_to, header, importance]):
            raise ValidationError("--eml", "a ready message file cannot be combined with fields like --to or --subject")
        rules = ready_rules(config.user_name, runtime.settings.smtp_from_policy, "m365relay send --eml", config.send_as)
        outgoing = accept_ready(OutgoingMessage.from_bytes(eml.read_bytes()), rules)
    else:
        spec = MessageSpec(
            to=to or [],
            cc=cc or [],
            bcc=bcc or [],
            subject=subject,
            text=_maybe_file(text),
            html=_maybe_file(html),
            sender=sender,
            reply_to=reply_to or [],
            attachments=[_attachment(p) for p in attach or []],
            headers=_headers(header or []),
            importance=importance,
        )
        outgoing = OutgoingMessage.from_message(compose(spec, default_from=config.user_name))
    outgoing.ensure_message_id(config.user_name.rpartition("@")[2])
    if now:
        result = asyncio.run(_send_now(runtime, config, outgoing, save_to_sent_items))
        out.print(
            f"[green]sent[/] {outgoing.headers['Message-ID']} via Graph ({result.method}, {result.elapsed:.2f} s); "
            f"request-id {result.request_id}"
        )
        for note in result.notes:
            out.print(f"[yellow]note:[/] {note}")
        return
    from .queue import enqueue_and_report

    enqueue_and_report(runtime, config, outgoing, save_to_sent_items, idempotency_key, wait)


async def _send_now(
    runtime: Runtime, config: ConnectorConfig, outgoing: OutgoingMessage, save_to_sent_items: bool
) -> SendResult:
    try:
        return await runtime.sender.send(config, outgoing, save_to_sent_items=save_to_sent_items)
    finally:
        await runtime.sender.aclose()


def _maybe_file(value: str | None) -> str | None:
    if value is not None and value.startswith("@"):
        try:
            return Path(value[1:]).read_text()
        except OSError as exc:
            raise ValidationError("body", f"cannot read {value[1:]!r}: {exc.strerror}") from exc
    return value


def _attachment(path: Path) -> AttachmentSpec:
    return AttachmentSpec(path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0])


def _headers(values: list[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep:
            raise ValidationError("--header", f"{value!r} is not 'Name: value'")
        headers[name.strip()] = content.strip()
    return headers


def register(app: typer.Typer) -> None:
    app.command("send")(send)
