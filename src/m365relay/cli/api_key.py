"""``m365relay api-key create|ls|revoke`` — keys for the JSON API. A key is shown once, when it is created;
the relay keeps only its SHA-256 digest."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..access.api_keys import SCOPES, ApiKeyStore
from .state import state

out = Console(highlight=False)
group = typer.Typer(help="Create, list and revoke API keys for the HTTP API.", no_args_is_help=True)


def _store(ctx: typer.Context) -> ApiKeyStore:
    runtime = state(ctx).runtime
    return ApiKeyStore(runtime.db, runtime.clock)


@group.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Who uses the key, e.g. the application's name.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help=f"Repeat for several: {', '.join(SCOPES)} (admin implies the others)."),
    ],
    connector: Annotated[
        str | None, typer.Option(help="Allow sending only through this connector (default: any).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON (includes the key).")] = False,
) -> None:
    """Create a key and print it — the only time it is shown. Store it in the application's secret store."""
    runtime = state(ctx).runtime
    connector_id = runtime.connectors.get(connector).id if connector else None
    issued = _store(ctx).create(name, scope, connector_id=connector_id, actor="cli")
    if as_json:
        out.print_json(json.dumps({**issued.key.public_view(), "key": issued.token}))
        return
    out.print(f"[green]created[/] API key {issued.key.name!r} (scopes: {', '.join(issued.key.scopes)})")
    out.print("The key is shown once; the relay keeps only its hash. Use it as `Authorization: Bearer <key>`:")
    out.print(issued.token, markup=False, soft_wrap=True)


@group.command("ls")
def ls(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List keys: name, prefix, scopes, last use. Never the keys themselves."""
    runtime = state(ctx).runtime
    keys = _store(ctx).list(include_revoked=all_keys)
    if as_json:
        out.print_json(json.dumps([k.public_view() for k in keys]))
        return
    names = {c.id: c.name for c in runtime.connectors.all()}
    table = Table("id", "name", "prefix", "scopes", "connector", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            str(k.id), k.name, f"m365r_{k.prefix}_…", ", ".join(k.scopes),
            names.get(k.connector_id, "") if k.connector_id else "any", _when(k.created_at),
            _when(k.last_used_at), _when(k.revoked_at),
        )  # fmt: skip
    out.print(table)


@group.command("revoke")
def revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key's id, prefix (m365r_xxxxxxxx) or name.")],
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    revoked = _store(ctx).revoke(key, actor="cli")
    out.print(f"[green]revoked[/] API key {revoked.name!r} (m365r_{revoked.prefix}_…)")


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="api-key")
