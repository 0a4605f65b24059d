"""`m365relay sandbox`: run the emulator in the foreground until SIGINT/SIGTERM.

The project CLI imports this module lazily and registers `sandbox` as a command; `python -m
m365relay.sandbox` wraps the same function in a small typer app of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .directory import CLOUDS, DEFAULT_TOKEN_LIFETIME
from .sentitems_store import DEFAULT_DELAY_SECONDS
from .server import DEMO_INFO_FILE, SandboxServer

DEFAULT_DATA = Path(".m365relay/sandbox")
DEFAULT_PORT = 8443


def _announce(server: SandboxServer) -> None:
    typer.echo(f"m365relay sandbox listening on {server.url}")
    typer.echo(f"  CA certificate (trust this): {server.ca_file}")
    typer.echo(f"  captured mail viewer:        {server.url}/")
    typer.echo(f"  admin/test API:              {server.url}/_sandbox/")
    info = server.demo_info
    if info:
        typer.echo("demo tenant:")
        typer.echo(f"  tenant id:     {info['tenant_id']} ({info['tenant_domain']})")
        typer.echo(f"  client id:     {info['client_id']}")
        typer.echo(f"  secret value:  {info['secret_value']}")
        typer.echo(f"  secret id:     {info['secret_id']}")
        typer.echo(f"  mailbox:       {info['mailbox']}")
        typer.echo(f"  login URL:     {server.url}  (scope https://graph.microsoft.com/.default)")
        typer.echo(f"  written to:    {server.data_dir / DEMO_INFO_FILE}")
    typer.echo("Press Ctrl+C to stop.")


def sandbox(
    port: Annotated[int, typer.Option(help="HTTPS port on 127.0.0.1 (0 picks a free one).")] = DEFAULT_PORT,
    data: Annotated[Path, typer.Option(help="Directory for the CA, keys and demo.json.")] = DEFAULT_DATA,
    seed: Annotated[
        Path | None, typer.Option(help="Seed file (JSON or TOML): tenants, apps, mailboxes, policies.")
    ] = None,
    demo: Annotated[bool, typer.Option(help="Seed a ready demo tenant, app, secret and mailbox.")] = False,
    latency_ms: Annotated[float, typer.Option(help="Latency added to every Graph call, in ms.")] = 0.0,
    token_lifetime: Annotated[int, typer.Option(help="Access token lifetime in seconds.")] = DEFAULT_TOKEN_LIFETIME,
    cloud: Annotated[str, typer.Option(help=f"The sandbox's own cloud: {', '.join(CLOUDS)}.")] = "global",
    sent_items_delay: Annotated[
        float, typer.Option(help="Seconds until a send's copy shows in Sent Items (Exchange files it later).")
    ] = DEFAULT_DELAY_SECONDS,
) -> None:
    """Run the Microsoft 365 emulator (login + Graph mail) over HTTPS until interrupted."""
    if cloud not in CLOUDS:
        typer.echo(f"error: unknown cloud {cloud!r}; choose one of {', '.join(CLOUDS)}", err=True)
        raise typer.Exit(2)
    if seed is not None and not seed.is_file():
        typer.echo(f"error: seed file {seed} not found", err=True)
        raise typer.Exit(2)
    if sent_items_delay < 0:
        typer.echo("error: --sent-items-delay must be >= 0", err=True)
        raise typer.Exit(2)
    if not demo and seed is None:
        typer.echo("note: no --seed and no --demo: the directory starts empty (use /_sandbox/state).", err=True)
    try:
        server = SandboxServer(
            data,
            port=port,
            seed=seed,
            demo=demo,
            latency_ms=latency_ms,
            token_lifetime=token_lifetime,
            cloud=cloud,
            sent_items_delay=sent_items_delay,
        )
        server.on_ready = lambda: _announce(server)
        server.serve_forever()
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
