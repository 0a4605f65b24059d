"""``m365relay connector set|show|test|ls`` — the eMail (SMTP) connector screen on the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..clouds import CLOUDS, DEFAULT_GRAPH_RESOURCE
from ..connectors import DEFAULT_NAME, ConnectorConfig, ConnectorUpdate
from ..connectors.certificates import load_pair
from ..errors import ValidationError
from .state import state

out = Console(highlight=False)
group = typer.Typer(
    help="Configure the connector: the app registration (client id, tenant id, secret or certificate) and "
    "the system mailbox it sends from.",
    no_args_is_help=True,
)

NameOpt = Annotated[str, typer.Option("--name", help="Connector name (several connectors may exist).")]


@group.command("set")
def set_(
    ctx: typer.Context,
    name: NameOpt = DEFAULT_NAME,
    client_id: Annotated[
        str | None, typer.Option(help="OAuth Client ID: the app's Application (client) ID (Azure: Overview).")
    ] = None,
    tenant_id: Annotated[
        str | None,
        typer.Option(help="Tenant ID: the Directory (tenant) ID (Azure: Overview) or a verified domain."),
    ] = None,
    user_name: Annotated[
        str | None, typer.Option(help="User Name: the system mailbox mail is sent from, e.g. noreply@contoso.com.")
    ] = None,
    secret_stdin: Annotated[
        bool, typer.Option("--secret-stdin", help="Read the client secret's Value from standard input.")
    ] = False,
    secret_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the client secret's Value from this file.", metavar="FILE", exists=True, dir_okay=False
        ),
    ] = None,
    secret_expires: Annotated[
        str | None,
        typer.Option(help="The secret's Expires date from Certificates & secrets (YYYY-MM-DD).", metavar="DATE"),
    ] = None,
    certificate: Annotated[
        Path | None,
        typer.Option(help="Certificate credential: PEM certificate (also upload it in Azure).", metavar="PEM"),
    ] = None,
    private_key: Annotated[Path | None, typer.Option(help="The certificate's PEM private key.", metavar="PEM")] = None,
    cloud: Annotated[
        str | None,
        typer.Option(help="global, usgov-high, usgov-dod, china, or custom (with --login-url, --graph-url)."),
    ] = None,
    login_url: Annotated[str | None, typer.Option(help="custom cloud: the sign-in base URL (https).")] = None,
    graph_url: Annotated[str | None, typer.Option(help="custom cloud: the Microsoft Graph base URL (https).")] = None,
    graph_resource: Annotated[
        str | None,
        typer.Option(
            help=f"custom cloud: the Graph resource tokens are asked for (default {DEFAULT_GRAPH_RESOURCE}; "
            f"a national cloud's Graph behind a proxy: its own, e.g. {CLOUDS['usgov-high'].graph_url}).",
            metavar="URL",
        ),
    ] = None,
    ca_file: Annotated[
        str | None, typer.Option(help="custom cloud: PEM CA file to trust instead of the system store.", metavar="PEM")
    ] = None,
    send_as: Annotated[
        list[str] | None,
        typer.Option(
            "--send-as",
            help="Also send from this mailbox (repeatable; @contoso.com for any mailbox of a domain): mail From it "
            "goes through its own /users/{mailbox}/sendMail. Replaces the stored list.",
            metavar="ADDRESS|@DOMAIN",
        ),
    ] = None,
    no_send_as: Annotated[bool, typer.Option("--no-send-as", help="Clear the send-as mailboxes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create or update a connector. Fields you leave out keep their stored values.

    The secret is never taken as an argument (it would land in shell history): pipe it in.

    [bold]Example[/] (the manual's steps, in one go):

      printf '%s' "$SECRET_VALUE" | m365relay connector set --client-id 1111…  --tenant-id 2222… \\
          --user-name noreply@contoso.com --secret-stdin --secret-expires 2027-06-30
    """
    secret = _read_secret(secret_stdin, secret_file)
    if send_as and no_send_as:
        raise ValidationError("--send-as", "use --send-as or --no-send-as, not both")
    cert = None
    if certificate or private_key:
        if not (certificate and private_key):
            raise ValidationError("--certificate", "give both --certificate and --private-key")
        cert = load_pair(certificate.read_bytes(), private_key.read_bytes())
    change = ConnectorUpdate(
        client_id=client_id,
        tenant_id=tenant_id,
        user_name=user_name,
        cloud=cloud,
        login_url=login_url,
        graph_url=graph_url,
        graph_resource=graph_resource,
        ca_file=ca_file,
        secret=secret,
        secret_expires=secret_expires,
        certificate=cert,
        send_as=[] if no_send_as else send_as,
    )
    saved = state(ctx).runtime.connectors.save(name, change, actor="cli")
    if as_json:
        out.print_json(json.dumps(saved.public_view()))
        return
    out.print(f"[green]saved[/] connector [bold]{saved.name}[/]")
    print_connector(saved)
    for hint in next_steps(saved):
        out.print(f"[cyan]next:[/] {hint}")


@group.command("show")
def show(
    ctx: typer.Context,
    name: NameOpt = DEFAULT_NAME,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show a connector's settings and state. Secret values are never shown."""
    connector = state(ctx).runtime.connectors.get(name)
    if as_json:
        out.print_json(json.dumps(connector.public_view()))
    else:
        print_connector(connector)


@group.command("ls")
def ls(ctx: typer.Context) -> None:
    """List connectors with their state and credential expiry."""
    table = Table("name", "user name", "tenant", "cloud", "state", "credential expires")
    for c in state(ctx).runtime.connectors.all():
        cred = c.credential
        expires = f"{cred.expires_on} ({cred.days_left()} days)" if cred and cred.expires_on else "-"
        table.add_row(c.name, c.user_name, c.tenant_id, c.cloud.name, _state_text(c), expires)
    out.print(table)


@group.command("test")
def test(ctx: typer.Context, name: NameOpt = DEFAULT_NAME) -> None:
    """Get a token with the connector's credential and check it carries Mail.Send."""
    runtime = state(ctx).runtime
    connector = runtime.connectors.get(name)
    token = runtime.tokens.acquire(connector)
    roles = ", ".join(token.roles or ()) or "none"
    if token.roles is not None and "Mail.Send" not in token.roles:
        from ..errors import ConsentMissingError, PermissionMissingError

        cls = ConsentMissingError if not token.roles else PermissionMissingError
        raise cls(f"token acquired, but its permissions ({roles}) do not include Mail.Send")
    out.print(f"[green]ok[/] token acquired for {connector.client_id}; application permissions: {roles}")


def print_connector(c: ConnectorConfig) -> None:
    view = c.public_view()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("name", c.name)
    table.add_row("OAuth Client ID", c.client_id)
    table.add_row("Tenant ID", c.tenant_id)
    table.add_row("User Name", c.user_name)
    if c.send_as:
        table.add_row("also sends from", ", ".join(c.send_as))
    table.add_row("cloud", f"{c.cloud.name} ({c.cloud.login_url}, {c.cloud.graph_url})")
    if c.cloud.graph_resource != c.cloud.graph_url:
        table.add_row("graph resource", f"{c.cloud.graph_resource} (token scope {c.cloud.scope})")
    if c.cloud.ca_file:
        table.add_row("CA file", str(c.cloud.ca_file))
    table.add_row("credential", _credential_text(view["credential"]))
    if view["next_credential"]:
        table.add_row("next credential", _credential_text(view["next_credential"]))
    table.add_row("state", _state_text(c))
    if c.state_reason and c.state_remedy:  # paused, or active with some mail waiting for the admin
        table.add_row("what to do", c.state_remedy)
    out.print(table)


def next_steps(c: ConnectorConfig) -> list[str]:
    steps = []
    if c.credential is None:
        steps.append(
            "create a client secret in Azure (App registrations > your app > Certificates & secrets > New client "
            "secret) and store its Value: m365relay connector set --secret-stdin --secret-expires YYYY-MM-DD"
        )
    else:
        steps.append("check the setup end to end: m365relay doctor")
    return steps


def _credential_text(view: dict[str, object] | None) -> str:
    if not view:
        return "[yellow]not set[/]"
    text = f"{view['description']}, set on {view['set_on']}"
    if view.get("expires_on"):
        days = view.get("days_left")
        colour = (
            "red" if isinstance(days, int) and days <= 7 else "yellow" if isinstance(days, int) and days <= 30 else ""
        )
        expiry = f"expires on {view['expires_on']} ({days} days)"
        text += f", [{colour}]{expiry}[/]" if colour else f", {expiry}"
    return text


def _state_text(c: ConnectorConfig) -> str:
    if c.paused:
        return f"[red]paused[/]: {c.state_reason}"
    if c.state_reason:
        return f"[green]active[/], [yellow]some mail waits[/]: {c.state_reason}"
    return "[green]active[/]"


def _read_secret(from_stdin: bool, path: Path | None) -> str | None:
    if from_stdin and path:
        raise ValidationError("--secret-stdin", "use --secret-stdin or --secret-file, not both")
    if from_stdin:
        if sys.stdin.isatty():
            import getpass

            return getpass.getpass("Client secret Value: ").strip()
        return sys.stdin.read().strip()
    if path:
        return path.read_text().strip()
    return None


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="connector")
