"""``m365relay doctor`` — the manual's setup checked step by step, one line per check with the fix.

Exit status: 0 nothing failed (warnings and skipped checks allowed) · 78 a check failed because the setup
is wrong (EX_CONFIG) · 75 the only failures were temporary trouble, run it again (EX_TEMPFAIL).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..connectors import DEFAULT_NAME, ConnectorConfig
from ..doctor import CheckResult, exit_status, run_checks
from ..runtime import Runtime
from .state import state

out = Console(highlight=False, soft_wrap=True)
SYMBOLS = {"pass": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]", "skip": "[dim]-[/]"}


def doctor(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Connector to check.")] = DEFAULT_NAME,
    send_test: Annotated[
        str | None,
        typer.Option(
            "--send-test",
            help="Also send a real test message to this address (check 6); without it check 6 is not run.",
            metavar="ADDRESS",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Check the connector's setup against Microsoft 365, step by step, and say how to fix what is wrong.

    1 configuration · 2 tenant in its cloud · 3 app registration · 4 secret or certificate ·
    5 Mail.Send consent · 6 mailbox (only with --send-test). Exit status 0 when nothing failed, 78 when
    the setup is wrong, 75 when only temporary trouble got in the way.
    """
    runtime = state(ctx).runtime
    connector = runtime.connectors.get(name)
    results = asyncio.run(_run(runtime, connector, send_test))
    code = exit_status(results)
    if as_json:
        report = {
            "connector": connector.name,
            "ok": code == 0,
            "exit_status": code,
            "checks": [r.to_dict() for r in results],
        }
        typer.echo(json.dumps(report, indent=2))
    else:
        print_results(connector, results)
    raise typer.Exit(code)


async def _run(runtime: Runtime, connector: ConnectorConfig, send_test: str | None) -> list[CheckResult]:
    try:
        return await run_checks(runtime, connector, send_test_to=send_test)
    finally:
        await runtime.sender.aclose()


def print_results(connector: ConnectorConfig, results: list[CheckResult]) -> None:
    out.print(
        f"[bold]connector {escape(connector.name)}[/]: {escape(connector.user_name)}, app {connector.client_id}, "
        f"tenant {escape(connector.tenant_id)}, cloud {connector.cloud.name}"
    )
    for r in results:
        out.print(f"{SYMBOLS[r.status]} {r.number} {escape(r.title)}: {escape(r.detail)}")
        if r.remedy and r.status in ("warn", "fail"):
            out.print(f"    [yellow]what to do:[/] {escape(r.remedy)}")
    counts = {status: sum(1 for r in results if r.status == status) for status in SYMBOLS}
    warnings = "1 warning" if counts["warn"] == 1 else f"{counts['warn']} warnings"
    out.print(f"{counts['pass']} passed, {warnings}, {counts['fail']} failed, {counts['skip']} not run")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
