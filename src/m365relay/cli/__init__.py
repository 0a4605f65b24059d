"""The ``m365relay`` command line. Every command has ``--help``; every failure is one clear line (plus the
remedy) and a non-zero exit status — never a traceback.

Exit statuses follow sysexits(3) where one fits, so scripts can tell failures apart:
0 done · 1 failed · 2 usage error · 65 the message itself is bad (EX_DATAERR) · 69 Microsoft 365
unavailable, try later (EX_UNAVAILABLE) · 75 temporary failure (EX_TEMPFAIL) · 78 the connector's setup is
wrong (EX_CONFIG).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from ..errors import ConnectorError, M365RelayError, MessageError, TransientError, ValidationError
from .state import CliState

EX_DATAERR, EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG = 65, 69, 75, 78

app = typer.Typer(
    name="m365relay",
    help="Send an application's system mail from a Microsoft 365 mailbox through Microsoft Graph "
    "(OAuth 2.0 client credentials) — over SMTP, HTTP or Python.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="TOML settings file (also M365RELAY_CONFIG).", metavar="FILE"),
    ] = None,
    home: Annotated[
        str | None,
        typer.Option("--home", help="Data directory (also M365RELAY_HOME; default ./.m365relay).", metavar="DIR"),
    ] = None,
) -> None:
    state = CliState(config=config, home=home)
    ctx.obj = state
    ctx.call_on_close(state.close)


def exit_code_for(error: M365RelayError) -> int:
    if isinstance(error, ConnectorError):
        return EX_CONFIG
    if isinstance(error, MessageError | ValidationError):
        return EX_DATAERR
    if isinstance(error, TransientError):
        return EX_TEMPFAIL
    return 1


def report(error: M365RelayError) -> None:
    err.print(f"[bold red]error:[/] {error.message}", markup=True, highlight=False)
    if error.remedy:
        err.print(f"[yellow]what to do:[/] {error.remedy}")
    if isinstance(error, ValidationError):
        for other in error.related:
            err.print(f"[bold red]error:[/] {other.message}")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def main(argv: list[str] | None = None) -> None:
    # Whatever the process creates (database, key, TLS files, demo.json, certificates) is for this user only,
    # whatever umask the shell or the service manager handed down (docs/security.md, file permissions).
    os.umask(os.umask(0o077) | 0o077)
    _register()
    try:
        result = app(args=argv, prog_name="m365relay", standalone_mode=False)
    except M365RelayError as exc:
        report(exc)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # Click's own outcomes (usage errors, --help's exit, Abort). Matched by shape, not class: typer ≥ 0.29
        # bundles a private copy of click whose classes are not the click package's.
        _click_outcome(exc)
        if os.environ.get("M365RELAY_DEBUG"):
            raise
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}")
        err.print("run again with M365RELAY_DEBUG=1 to see the traceback, and please report it")
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def _click_outcome(exc: Exception) -> None:
    """Exit the way click would for its own exceptions; return for anything else."""
    name = type(exc).__name__
    if name == "Exit":
        sys.exit(getattr(exc, "exit_code", 0))
    if name == "Abort":
        err.print("aborted")
        sys.exit(130)
    show = getattr(exc, "show", None)
    if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
        show()
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]


def _register() -> None:
    """Attach the command groups (imported here so ``m365relay --help`` stays fast)."""
    if getattr(_register, "done", False):
        return
    from . import (
        admin,
        api_key,
        cert,
        connector,
        demo,
        doctor,
        queue,
        relay_user,
        rotate,
        sandbox,
        send,
        serve,
        suppression,
        webhook,
    )

    for module in (
        connector,
        send,
        queue,
        serve,
        sandbox,
        doctor,
        cert,
        rotate,
        api_key,
        relay_user,
        admin,
        demo,
        webhook,
        suppression,
    ):
        module.register(app)
    _register.done = True  # type: ignore[attr-defined]
