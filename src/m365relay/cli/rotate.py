"""``m365relay connector rotate`` and ``connector remove-old`` — renew a secret or certificate without a
moment of downtime: stage the new one, prove it gets a token with Mail.Send, switch atomically, and
forget the old one only when the admin confirms it was deleted in Azure."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..connectors import DEFAULT_NAME, ConnectorUpdate
from ..connectors.certificates import load_pair
from ..errors import ValidationError
from ..lifecycle import Rotation, RotationResult
from .connector import _read_secret, group
from .state import state

out = Console(highlight=False, soft_wrap=True)


@group.command("rotate")
def rotate(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Connector name.")] = DEFAULT_NAME,
    secret_stdin: Annotated[
        bool, typer.Option("--secret-stdin", help="Read the new client secret's Value from standard input.")
    ] = False,
    secret_file: Annotated[
        Path | None,
        typer.Option(help="Read the new secret's Value from this file.", metavar="FILE", exists=True, dir_okay=False),
    ] = None,
    secret_expires: Annotated[
        str | None, typer.Option(help="The new secret's Expires date (YYYY-MM-DD).", metavar="DATE")
    ] = None,
    certificate: Annotated[
        Path | None, typer.Option(help="New certificate credential: PEM certificate.", metavar="PEM")
    ] = None,
    private_key: Annotated[Path | None, typer.Option(help="The certificate's PEM private key.", metavar="PEM")] = None,
    stage_only: Annotated[
        bool, typer.Option("--stage-only", help="Store and verify the new credential, but do not switch to it yet.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Switch the connector to a new secret or certificate without interrupting mail.

    The new credential is stored as [bold]next[/], must get a token carrying Mail.Send, and only then becomes
    current, in one step; the previous one is kept as [bold]old[/] until you confirm with remove-old. Without
    a new credential, the one staged before (e.g. by cert new) is verified and promoted.

      printf '%s' "$NEW_VALUE" | m365relay connector rotate --secret-stdin --secret-expires 2028-06-30
    """
    change = _change(secret_stdin, secret_file, secret_expires, certificate, private_key)
    runtime = state(ctx).runtime
    rotation = Rotation(runtime.connectors, runtime.tokens)
    done = asyncio.run(rotation.rotate(name, change, promote=not stage_only, actor="cli"))
    if as_json:
        typer.echo(json.dumps({"promoted": done.promoted, "roles": done.roles, **done.connector.public_view()}))
        return
    _print(done)


@group.command("remove-old")
def remove_old(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Connector name.")] = DEFAULT_NAME,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="First ask Microsoft whether the old credential still works.")
    ] = True,
) -> None:
    """Confirm the previous credential is gone: forget it here. Delete it in the Azure portal too."""
    runtime = state(ctx).runtime
    rotation = Rotation(runtime.connectors, runtime.tokens)
    connector = runtime.connectors.get(name)
    old = connector.old_credential
    if check and old is not None and asyncio.run(rotation.still_accepted(connector, old)):
        out.print(
            f"[yellow]warning:[/] Microsoft still accepts the old {escape(old.describe())}: it stays usable by anyone "
            "holding a copy until it expires. Delete it in the Azure portal (Certificates & secrets)."
        )
    removed = rotation.remove_old(name, actor="cli")
    out.print(f"[green]removed[/] the old {escape(removed.describe())} from connector {escape(connector.name)}")


def _change(
    secret_stdin: bool,
    secret_file: Path | None,
    secret_expires: str | None,
    certificate: Path | None,
    private_key: Path | None,
) -> ConnectorUpdate | None:
    secret = _read_secret(secret_stdin, secret_file)
    cert = None
    if certificate or private_key:
        if not (certificate and private_key):
            raise ValidationError("--certificate", "give both --certificate and --private-key")
        cert = load_pair(certificate.read_bytes(), private_key.read_bytes())
    if secret is None and cert is None:
        if secret_expires:
            raise ValidationError("--secret-expires", "goes with a new secret (--secret-stdin or --secret-file)")
        return None
    return ConnectorUpdate(secret=secret, secret_expires=secret_expires, certificate=cert)


def _print(done: RotationResult) -> None:
    c = done.connector
    roles = ", ".join(done.roles) if done.roles is not None else "unknown (token not readable)"
    out.print(f"[green]verified[/] the new {escape(done.credential.describe())}: token issued, permissions: {roles}")
    if not done.promoted:
        out.print(f"staged, not in use yet; switch with: m365relay connector rotate --name {escape(c.name)}")
        return
    out.print(f"[green]promoted[/]: connector {escape(c.name)} now uses it (configuration version {c.config_version})")
    if c.old_credential is not None:
        out.print(
            f"the previous {escape(c.old_credential.describe())} is kept as 'old'. Delete it in the Azure portal "
            f"(Certificates & secrets), then confirm: m365relay connector remove-old --name {escape(c.name)}"
        )


def register(app: typer.Typer) -> None:
    """The commands join the ``connector`` group when this module is imported; nothing else to attach."""
