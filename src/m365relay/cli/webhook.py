"""``m365relay webhook add|ls|rm|test|replay`` — signed webhooks for message events (docs/api.md, "Events
and webhooks"). The signing secret is printed once, by ``add``; nothing prints it again."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..events.delivery import send_test
from ..events.endpoints import Endpoint
from ..events.kinds import EVENT_TYPES
from .queue import parse_age
from .state import state

out = Console(highlight=False)
group = typer.Typer(
    help="Webhooks: HTTP endpoints that receive a connector's message events, signed (Standard Webhooks).",
    no_args_is_help=True,
)

IdArg = Annotated[int, typer.Argument(help="The endpoint's id (see: m365relay webhook ls).", metavar="ID")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print as JSON.")]


@group.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The http:// or https:// URL that receives the events.")],
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--events",
            help=f"Events to send, comma-separated or repeated: {', '.join(EVENT_TYPES)}, or all (the default).",
            metavar="EVENTS",
        ),
    ] = None,
    connector: Annotated[str | None, typer.Option(help="Whose events (default: 'default').")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add an endpoint. Its signing secret (whsec_…) is shown once: store it in the receiving application.

    [bold]Example[/]: m365relay webhook add https://app.contoso.com/hooks/mail --events sent,bounced,failed
    """
    issued = state(ctx).runtime.webhooks.add(url, events, connector)
    endpoint = issued.endpoint
    if as_json:
        out.print_json(json.dumps({**endpoint.public_view(), "secret": issued.secret}))
        return
    out.print(f"[green]added[/] webhook endpoint [bold]{endpoint.id}[/] → {endpoint.shown_url}")
    out.print(f"connector: {endpoint.connector}; events: {', '.join(endpoint.events)}")
    out.print(f"secret: [bold]{issued.secret}[/]")
    out.print("[yellow]This secret is shown once; store it now. Verify each request with it (docs/api.md).[/]")


@group.command("ls")
def ls(
    ctx: typer.Context,
    connector: Annotated[str | None, typer.Option(help="Only this connector's endpoints.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List endpoints, their state and their deliveries (never a secret, never the URL's credentials)."""
    runtime = state(ctx).runtime
    endpoints = runtime.webhooks.list(connector)
    counts = runtime.webhooks.counts()
    if as_json:
        out.print_json(json.dumps([{**e.public_view(), "deliveries": counts.get(e.id, {})} for e in endpoints]))
        return
    if not endpoints:
        out.print("no webhook endpoints yet; add one with: m365relay webhook add URL")
        return
    table = Table("id", "connector", "url", "events", "state", "pending", "delivered", "failed", "last error")
    for e in endpoints:
        c = counts.get(e.id, {})
        table.add_row(
            str(e.id), e.connector, e.shown_url, ", ".join(e.events), _state(e),
            str(c.get("pending", 0)), str(c.get("delivered", 0)), str(c.get("failed", 0)), e.last_error or "-",
        )  # fmt: skip
    out.print(table)


@group.command("rm")
def rm(ctx: typer.Context, endpoint_id: IdArg) -> None:
    """Remove an endpoint; its undelivered events go with it."""
    endpoint = state(ctx).runtime.webhooks.remove(endpoint_id)
    out.print(f"[green]removed[/] webhook endpoint [bold]{endpoint.id}[/] ({endpoint.shown_url})")


@group.command("test")
def test(ctx: typer.Context, endpoint_id: IdArg) -> None:
    """Send a signed test event (type webhook.test) now and report the answer."""
    runtime = state(ctx).runtime
    result = asyncio.run(send_test(runtime.webhooks, endpoint_id, runtime.settings, clock=runtime.clock))
    if not result.ok:
        out.print(f"[red]failed:[/] {result.text}")
        raise typer.Exit(1)
    out.print(f"[green]ok:[/] {result.text} (webhook-id {result.webhook_id})")


@group.command("replay")
def replay(
    ctx: typer.Context,
    endpoint_id: IdArg,
    since: Annotated[str, typer.Option(help="Replay the events of this last while (e.g. 30m, 24h, 3d).")] = "24h",
    delivery: Annotated[int | None, typer.Option(help="Replay only this delivery (its id).")] = None,
) -> None:
    """Send an endpoint's events again (with their original webhook-id) and enable it if it was disabled."""
    runtime = state(ctx).runtime
    window = parse_age(since)
    assert window is not None
    count = runtime.webhooks.replay(
        endpoint_id, since=None if delivery is not None else runtime.clock.now() - window, delivery_id=delivery
    )
    what = f"delivery {delivery}" if delivery is not None else f"{count} event(s) of the last {since}"
    out.print(f"[green]queued again:[/] {what} for webhook endpoint [bold]{endpoint_id}[/]")


def _state(endpoint: Endpoint) -> str:
    if not endpoint.enabled:
        return f"[red]disabled[/] ({endpoint.disabled_reason or 'failing'})"
    return "[yellow]failing[/]" if endpoint.failing_since else "enabled"


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="webhook")
