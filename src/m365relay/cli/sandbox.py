"""``m365relay sandbox`` — the Microsoft 365 emulator, for tests, demos and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def sandbox(
    port: Annotated[int, typer.Option(help="HTTPS port on 127.0.0.1 (0 picks a free one).")] = 8443,
    data: Annotated[Path, typer.Option(help="Data directory: CA, server certificate, demo.json.")] = Path(
        ".m365relay/sandbox"
    ),
    seed: Annotated[
        Path | None, typer.Option(help="Directory state (tenants, apps, mailboxes) as JSON.", metavar="FILE")
    ] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Seed a ready demo tenant, app, secret and mailbox.")] = False,
    latency_ms: Annotated[float, typer.Option(help="Added latency of every Graph call, in milliseconds.")] = 0.0,
    token_lifetime: Annotated[int, typer.Option(help="Access token lifetime in seconds (> 300).")] = 3599,
    cloud: Annotated[str, typer.Option(help="Which Microsoft cloud the sandbox pretends to be.")] = "global",
) -> None:
    """Run the emulator of the Microsoft identity platform and Graph mail in the foreground.

    It speaks HTTPS with a CA it creates in DATA (the path is printed: point clients at it), and shows
    every message "sent" through it at its URL. Nothing here talks to Microsoft.
    """
    from ..sandbox.cli import sandbox as run

    run(port=port, data=data, seed=seed, demo=demo, latency_ms=latency_ms, token_lifetime=token_lifetime, cloud=cloud)


def register(app: typer.Typer) -> None:
    app.command("sandbox")(sandbox)
