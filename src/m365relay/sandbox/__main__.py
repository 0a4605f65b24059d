"""`python -m m365relay.sandbox`: the sandbox command without the main CLI."""

from __future__ import annotations

import typer

from .cli import sandbox


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(sandbox)
    app()


if __name__ == "__main__":
    main()
