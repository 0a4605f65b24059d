"""``m365relay queue …`` and ``m365relay worker`` — the outbox for operators."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .. import logs
from ..connectors import ConnectorConfig
from ..errors import ValidationError
from ..graph import OutgoingMessage
from ..outbox import FINAL, STATUSES, MessageRecord
from ..outbox.recipients import BOUNCED, SUPPRESSED, states_of
from ..runtime import Runtime
from .state import state

out = Console(highlight=False)
group = typer.Typer(help="Inspect and manage queued mail (the outbox).", no_args_is_help=True)

STATUS_COLOURS = {"sent": "green", "failed": "red", "cancelled": "dim", "deferred": "yellow", "sending": "cyan"}


def enqueue_and_report(
    runtime: Runtime,
    config: ConnectorConfig,
    outgoing: OutgoingMessage,
    save_to_sent_items: bool,
    idempotency_key: str | None,
    wait: bool,
) -> None:
    envelope, dropped = runtime.suppressions.at_acceptance(config.id, None, outgoing.header_recipients())
    result = runtime.outbox.enqueue(
        config.id,
        outgoing,
        envelope=envelope,
        source="cli",
        idempotency_key=idempotency_key,
        save_to_sent_items=save_to_sent_items,
    )
    if result.created and dropped:
        runtime.suppressions.record_dropped(result.id, dropped)
        out.print(f"[yellow]suppressed after a hard bounce, not sent to:[/] {', '.join(sorted(dropped))}")
    verb = "queued" if result.created else "already queued (same idempotency key)"
    out.print(f"[green]{verb}[/] message {result.id} for connector {config.name}")
    if not wait:
        if config.paused:
            out.print(
                f"[yellow]note:[/] the connector is paused ({config.state_reason}); the mail waits until it is fixed"
            )
        out.print("a running `m365relay worker` or `m365relay serve` sends it; follow it with: m365relay queue show "
                  f"{result.id}")  # fmt: skip
        return
    record = _wait_here(runtime, result.id)
    _print_outcome(record)
    if record.status != "sent":
        raise typer.Exit(75 if record.status in ("queued", "deferred") else 1)


def _wait_here(runtime: Runtime, message_id: int) -> MessageRecord:
    """Run a dispatcher in this process until the message is final (or only waits for a retry)."""

    async def go() -> MessageRecord:
        dispatcher = runtime.dispatcher()
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            with out.status(f"sending message {message_id}…"):
                while True:
                    record = await asyncio.to_thread(runtime.outbox.get, message_id, events=False)
                    if record.final or record.status == "deferred" or (record.status == "queued" and record.attempts):
                        return runtime.outbox.get(message_id)
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task
            await runtime.sender.aclose()

    return asyncio.run(go())


def _print_outcome(record: MessageRecord) -> None:
    colour = STATUS_COLOURS.get(record.status, "")
    out.print(
        f"message {record.id}: [{colour}]{record.status}[/]" if colour else f"message {record.id}: {record.status}"
    )
    if record.graph_request_id:
        out.print(f"Graph request-id {record.graph_request_id}")
    if record.last_error and record.status != "sent":
        out.print(f"[red]last error:[/] {record.last_error.message}")
        if record.last_error.remedy:
            out.print(f"[yellow]what to do:[/] {record.last_error.remedy}")


@group.command("ls")
def ls(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help=f"Only this status: {', '.join(STATUSES)}, or bounced (a recipient bounced).")
    ] = None,
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    recipient: Annotated[str | None, typer.Option(help="Only messages to addresses containing this text.")] = None,
    older_than: Annotated[str | None, typer.Option(help="Only messages older than this (e.g. 30m, 2h, 1d).")] = None,
    newer_than: Annotated[str | None, typer.Option(help="Only messages newer than this.")] = None,
    before: Annotated[int | None, typer.Option(help="Page: messages with ids below this one.")] = None,
    limit: Annotated[int, typer.Option(help="How many to show.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List messages, newest first."""
    runtime = state(ctx).runtime
    if status and status not in (*STATUSES, BOUNCED):
        raise ValidationError("--status", f"must be one of {', '.join(STATUSES)} or {BOUNCED}")
    connector_id = runtime.connectors.get(connector).id if connector else None
    records = runtime.outbox.list(
        status=status, connector_id=connector_id, recipient=recipient, older_than=parse_age(older_than),
        newer_than=parse_age(newer_than), before_id=before, limit=limit,
    )  # fmt: skip
    if as_json:
        out.print_json(json.dumps([r.public_view() for r in records]))
        return
    names = {c.id: c.name for c in runtime.connectors.all()}
    table = Table("id", "status", "age", "tries", "connector", "to", "subject", "last error")
    now = datetime.now(UTC)
    for r in records:
        colour = STATUS_COLOURS.get(r.status, "")
        table.add_row(
            str(r.id), f"[{colour}]{r.status}[/]" if colour else r.status, _age(now - r.created_at), str(r.attempts),
            names.get(r.connector_id, str(r.connector_id)), _short(", ".join(r.recipients), 40), _short(r.subject, 40),
            _short(r.last_error.kind if r.last_error and r.status != "sent" else "", 30),
        )  # fmt: skip
    out.print(table)
    if len(records) == limit:
        out.print(f"more: m365relay queue ls --before {records[-1].id}")


@group.command("show")
def show(
    ctx: typer.Context,
    message_id: Annotated[int, typer.Argument(help="Message id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show one message: recipients, state, every event, and the last error with its remedy."""
    runtime = state(ctx).runtime
    record = runtime.outbox.get(message_id)
    with runtime.db.read() as session:
        recipients = states_of(session, [record])[record.id]
    if as_json:
        out.print_json(json.dumps({**record.public_view(), "recipients": [r.view() for r in recipients]}))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for label, value in (
        ("id", str(record.id)), ("status", record.status), ("subject", record.subject or ""),
        ("from", record.header_from or ""), ("recipients", ", ".join(record.recipients)),
        ("Message-ID", record.message_id or ""), ("size", f"{record.size:,} bytes"),
        ("attempts", str(record.attempts)), ("created", record.created_at.isoformat(timespec="seconds")),
        ("expires", record.expires_at.isoformat(timespec="seconds")),
        ("Graph request-id", record.graph_request_id or ""),
    ):  # fmt: skip
        table.add_row(label, value)
    out.print(table)
    states = Table("recipient", "state", "status", "when", "diagnostic", title="recipients")
    for r in recipients:
        colour = STATUS_COLOURS.get(r.state, "red" if r.state in (BOUNCED, SUPPRESSED) else "yellow")
        when = r.at.isoformat(timespec="seconds") if r.at else ""
        states.add_row(r.address, f"[{colour}]{r.state}[/]", r.status or "", when, r.diagnostic or "")
    out.print(states)
    events = Table("when", "event", "detail", "request-id", title="events")
    for e in record.events:
        events.add_row(e.at.isoformat(timespec="seconds"), e.kind, e.detail or "", e.request_id or "")
    out.print(events)
    if record.last_error and record.status != "sent":
        out.print(f"[red]last error:[/] {record.last_error.kind}: {record.last_error.message}")
        if record.last_error.remedy:
            out.print(f"[yellow]what to do:[/] {record.last_error.remedy}")


@group.command("retry")
def retry(ctx: typer.Context, message_ids: Annotated[list[int], typer.Argument(help="Message ids.")]) -> None:
    """Queue failed, cancelled or deferred messages for an attempt now."""
    for message_id in message_ids:
        state(ctx).runtime.outbox.retry(message_id, actor="cli")
        out.print(f"message {message_id}: queued")


@group.command("cancel")
def cancel(ctx: typer.Context, message_ids: Annotated[list[int], typer.Argument(help="Message ids.")]) -> None:
    """Cancel queued or deferred messages (they will not be sent)."""
    for message_id in message_ids:
        state(ctx).runtime.outbox.cancel(message_id, actor="cli")
        out.print(f"message {message_id}: cancelled")


@group.command("purge")
def purge(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option(help="Statuses to purge (sent, failed, cancelled).")] = None,
    older_than: Annotated[str, typer.Option(help="Only messages finished longer ago than this (e.g. 7d).")] = "7d",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete finished messages and their bodies. Queued mail is never purged."""
    statuses = tuple(status or FINAL)
    age = parse_age(older_than) or timedelta(0)
    if not yes:
        typer.confirm(f"Delete {'/'.join(statuses)} messages finished more than {older_than} ago?", abort=True)
    count = state(ctx).runtime.outbox.purge(statuses, age)
    out.print(f"purged {count} message(s)")


@group.command("stats")
def stats(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """Counts by status and connector, and the age of the oldest waiting message."""
    runtime = state(ctx).runtime
    s = runtime.outbox.stats()
    oldest = _age(datetime.now(UTC) - s.oldest_pending_at) if s.oldest_pending_at else None
    if as_json:
        out.print_json(json.dumps({"by_status": s.by_status, "oldest_pending_age": oldest,
                                   "by_connector": {str(k): v for k, v in s.by_connector.items()}}))  # fmt: skip
        return
    names = {c.id: c for c in runtime.connectors.all()}
    table = Table("connector", "state", *STATUSES)
    for connector_id, counts in sorted(s.by_connector.items()):
        c = names.get(connector_id)
        table.add_row(
            c.name if c else str(connector_id), c.state if c else "?", *(str(counts.get(x, 0)) for x in STATUSES)
        )
    table.add_row("[bold]total[/]", "", *(f"[bold]{s.by_status.get(x, 0)}[/]" for x in STATUSES))
    out.print(table)
    out.print(f"oldest waiting message: {oldest or 'none'}")


def worker(ctx: typer.Context, quiet: Annotated[bool, typer.Option("--quiet", help="No status line.")] = False) -> None:
    """Send queued mail: run the dispatcher until SIGINT/SIGTERM (`serve` runs one too)."""
    logs.configure(state(ctx).settings)
    runtime = state(ctx).runtime

    async def go() -> None:
        dispatcher = runtime.dispatcher()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(dispatcher.run(stop))
        webhooks = asyncio.create_task(runtime.webhook_deliverer().run(stop))  # signed events (events/)
        out.print(f"worker {dispatcher.owner} sending; Ctrl-C stops (in-flight mail finishes or is released)")
        started = time.monotonic()
        try:
            if quiet or not out.is_terminal:
                await task
                return
            with Live(console=out, refresh_per_second=4, transient=True) as live:
                while not task.done():
                    st = dispatcher.stats
                    live.update(
                        f"sent {st.sent} · deferred {st.deferred} · failed {st.failed} · in flight {st.in_flight}"
                        + (f" · [red]paused: {', '.join(sorted(st.paused))}[/]" if st.paused else "")
                        + f" · up {_age(timedelta(seconds=time.monotonic() - started))}"
                    )
                    await asyncio.wait([task], timeout=0.25)
        finally:
            await task
            stop.set()  # if the dispatcher ended on its own (an error), the webhook loop ends with it
            await webhooks
            await runtime.sender.aclose()
        st = dispatcher.stats
        out.print(f"worker stopped: sent {st.sent}, deferred {st.deferred}, failed {st.failed}, released {st.released}")

    asyncio.run(go())


def parse_age(value: str | None) -> timedelta | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not match:
        raise ValidationError("age", f"{value!r} is not a duration like 30s, 15m, 2h or 7d")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return timedelta(seconds=number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds}s"


def _short(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="queue")
    app.command("worker")(worker)
