"""``m365relay admin create-user|set-password|ls`` — sign-ins for the admin web UI."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..access.admins import AdminStore
from .relay_user import PromptOpt, StdinOpt, read_password, show_generated
from .state import state

out = Console(highlight=False)
group = typer.Typer(help="Administrators of the web UI (/admin/).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The administrator's sign-in name (case-insensitive).")]


def _store(ctx: typer.Context) -> AdminStore:
    runtime = state(ctx).runtime
    return AdminStore(runtime.db, clock=runtime.clock)


@group.command("create-user")
def create_user(
    ctx: typer.Context, username: NameArg = "admin", password_stdin: StdinOpt = False, prompt: PromptOpt = False
) -> None:
    """Create an administrator. Without --password-stdin or --prompt a strong password is generated and shown
    once."""
    password, generated = read_password(password_stdin, prompt)
    user = _store(ctx).create_user(username, password)
    out.print(f"[green]created[/] administrator [bold]{user.username}[/]; sign in at /admin/")
    if generated:
        show_generated(password)


@group.command("set-password")
def set_password(
    ctx: typer.Context, username: NameArg = "admin", password_stdin: StdinOpt = False, prompt: PromptOpt = False
) -> None:
    """Set a new password for an administrator (generated and shown once unless --password-stdin or --prompt)."""
    password, generated = read_password(password_stdin, prompt)
    user = _store(ctx).set_password(username, password)
    out.print(f"[green]new password set[/] for administrator [bold]{user.username}[/]")
    if generated:
        show_generated(password)


@group.command("ls")
def ls(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """List administrators (never their passwords)."""
    users = _store(ctx).list()
    if as_json:
        rows = [
            {
                "username": u.username,
                "created_at": u.created_at.isoformat(),
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            for u in users
        ]
        out.print_json(json.dumps(rows))
        return
    table = Table("username", "created", "last sign-in")
    for u in users:
        last = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "never"
        table.add_row(u.username, u.created_at.strftime("%Y-%m-%d %H:%M"), last)
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="admin")
