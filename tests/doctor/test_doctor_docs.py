"""Every option of the doctor, cert and rotation commands is documented (STYLE.md §9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from m365relay.cli import _register, app

DOCS = Path(__file__).resolve().parents[2] / "docs"


def command(*path: str) -> Any:
    _register()
    found: Any = typer.main.get_command(app)  # typer 0.29 vendors click: duck-type the groups
    for name in path:
        found = found.commands[name]
    return found


def test_every_option_is_documented() -> None:
    text = (DOCS / "doctor.md").read_text() + (DOCS / "credentials.md").read_text()
    checked = 0
    for path in (("doctor",), ("cert", "new"), ("connector", "rotate"), ("connector", "remove-old")):
        for param in command(*path).params:
            for option in [*param.opts, *param.secondary_opts]:
                if option.startswith("--") and option != "--help":
                    checked += 1
                    assert f"`{option}" in text or f" {option}" in text, f"{' '.join(path)} {option} is undocumented"
    assert checked >= 15
