"""``m365relay suppression ls|add|rm`` — the addresses a connector no longer mails after a hard bounce."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .state import state

out = Console(highlight=False)
group = typer.Typer(
    help="List, add and remove suppressed addresses (hard bounces stop further mail to them).", no_args_is_help=True
)


@group.command("ls")
def ls(
    ctx: typer.Context,
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Active entries, newest bounce first, with the bounce that caused each."""
    runtime = state(ctx).runtime
    connector_id = runtime.connectors.get(connector).id if connector else None
    entries = runtime.suppressions.list(connector_id)
    if as_json:
        out.print_json(json.dumps([e.view() for e in entries]))
        return
    names = {c.id: c.name for c in runtime.connectors.all()}
    table = Table("address", "connector", "since", "status", "why", "message", "until")
    for e in entries:
        table.add_row(
            e.address, names.get(e.connector_id, str(e.connector_id)), e.bounced_at.isoformat(timespec="seconds"),
            e.status or e.source, (e.diagnostic or "")[:60], str(e.message_id or ""),
            e.expires_at.date().isoformat() if e.expires_at else "",
        )  # fmt: skip
    out.print(table)
    if not entries:
        out.print("no suppressed addresses")


@group.command("add")
def add(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="The e-mail address to stop mailing.")],
    connector: Annotated[str, typer.Option(help="The connector it applies to.")] = "default",
    reason: Annotated[str | None, typer.Option(help="Why (shown in refusals and the admin UI).")] = None,
    days: Annotated[int | None, typer.Option(help="How long (default: M365RELAY_SUPPRESSION_DAYS).")] = None,
) -> None:
    """Suppress an address by hand (audited)."""
    runtime = state(ctx).runtime
    entry = runtime.suppressions.add(
        runtime.connectors.get(connector).id, address, actor="cli", reason=reason, days=days
    )
    until = entry.expires_at.date().isoformat() if entry.expires_at else "never"
    out.print(f"[green]suppressed[/] {entry.address} for connector {connector!r} until {until}")


@group.command("rm")
def rm(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="The suppressed address.")],
    connector: Annotated[str, typer.Option(help="The connector it applies to.")] = "default",
) -> None:
    """Remove an address from the list: mail to it is accepted again (audited)."""
    runtime = state(ctx).runtime
    entry = runtime.suppressions.remove(runtime.connectors.get(connector).id, address, actor="cli")
    out.print(f"[green]removed[/] {entry.address} from the suppression list of connector {connector!r}")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="suppression")
