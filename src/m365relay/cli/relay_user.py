"""``m365relay relay-user add|ls|rm|passwd`` — the accounts applications use to log in to the SMTP relay.

A password is never taken as an argument (it would land in shell history and ``ps``): it is generated and
printed once, read from standard input (``--password-stdin``), or typed at a hidden prompt (``--prompt``).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..access.passwords import generate_password
from ..access.relay_users import RelayUser, RelayUserStore
from ..errors import ValidationError
from .state import state

out = Console(highlight=False)
group = typer.Typer(
    help="Relay users: the usernames and passwords applications use for SMTP AUTH on the relay.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The username applications log in with (case-insensitive).")]
StdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")]
PromptOpt = Annotated[bool, typer.Option("--prompt", help="Ask for the password (hidden, typed twice).")]


def _store(ctx: typer.Context) -> RelayUserStore:
    runtime = state(ctx).runtime
    return RelayUserStore(runtime.db, clock=runtime.clock)


def read_password(from_stdin: bool, prompt: bool, what: str = "password") -> tuple[str, bool]:
    """(password, generated?) — from stdin, a prompt, or freshly generated."""
    if from_stdin and prompt:
        raise ValidationError("--password-stdin", "use --password-stdin or --prompt, not both")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise ValidationError("--password-stdin", "standard input was empty; pipe the password in")
        return password, False
    if prompt:
        return str(typer.prompt(f"New {what}", hide_input=True, confirmation_prompt=True)), False
    return generate_password(), True


def show_generated(password: str) -> None:
    out.print(f"password: [bold]{password}[/]")
    out.print("[yellow]This password is shown once; store it now.[/]")


@group.command("add")
def add(
    ctx: typer.Context,
    username: NameArg,
    allow_from: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-from",
            help="A From address (app@contoso.com) or domain (@contoso.com) this user may send as; repeatable. "
            "None: only the connector's mailbox under smtp_from_policy=enforce, anything (rewritten) under rewrite.",
            metavar="ADDRESS",
        ),
    ] = None,
    connector: Annotated[
        str | None, typer.Option(help="Connector this user's mail goes through (default: 'default').")
    ] = None,
    password_stdin: StdinOpt = False,
    prompt: PromptOpt = False,
) -> None:
    """Create a relay user. Without --password-stdin or --prompt a strong password is generated and shown once.

    [bold]Example[/]: m365relay relay-user add scanner --allow-from scanner@contoso.com
    """
    password, generated = read_password(password_stdin, prompt)
    user = _store(ctx).add(username, password, allowed_from=allow_from or (), connector=connector)
    out.print(f"[green]created[/] relay user [bold]{user.username}[/]")
    if generated:
        show_generated(password)


@group.command("passwd")
def passwd(ctx: typer.Context, username: NameArg, password_stdin: StdinOpt = False, prompt: PromptOpt = False) -> None:
    """Set a new password for a relay user (generated and shown once unless --password-stdin or --prompt)."""
    password, generated = read_password(password_stdin, prompt)
    user = _store(ctx).set_password(username, password)
    out.print(f"[green]new password set[/] for relay user [bold]{user.username}[/]")
    if generated:
        show_generated(password)


@group.command("ls")
def ls(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """List relay users (never their passwords)."""
    users = _store(ctx).list()
    if as_json:
        out.print_json(json.dumps([_view(u) for u in users]))
        return
    if not users:
        out.print("no relay users yet; create one with: m365relay relay-user add NAME")
        return
    table = Table("username", "connector", "allowed From", "state", "created", "last used")
    for u in users:
        table.add_row(
            u.username,
            u.connector_name or "default",
            ", ".join(u.allowed_from) or "-",
            "[red]disabled[/]" if u.disabled else "enabled",
            u.created_at.strftime("%Y-%m-%d %H:%M"),
            u.last_used_at.strftime("%Y-%m-%d %H:%M") if u.last_used_at else "never",
        )
    out.print(table)


@group.command("rm")
def rm(ctx: typer.Context, username: NameArg) -> None:
    """Delete a relay user. Applications still using it are refused at their next login."""
    _store(ctx).remove(username)
    out.print(f"[green]removed[/] relay user [bold]{username.strip().lower()}[/]")


def _view(user: RelayUser) -> dict[str, object]:
    return {
        "username": user.username,
        "connector": user.connector_name or "default",
        "allowed_from": list(user.allowed_from),
        "disabled": user.disabled,
        "created_at": user.created_at.isoformat(),
        "last_used_at": user.last_used_at.isoformat() if user.last_used_at else None,
    }


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="relay-user")
