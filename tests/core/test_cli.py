"""The CLI's promise: every command teaches with --help, and every failure is a clear message and a
non-zero exit status, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "M365RELAY_HOME": str(home), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "m365relay", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["queue", "ls", "--limit", "abc"], "Invalid value for '--limit'"),
        (["no-such-command"], "No such command"),
        (["send", "--bogus"], "No such option"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path, args: list[str], expected: str) -> None:
    done = cli(tmp_path, *args)
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr and "internal error" not in done.stderr


def test_every_command_has_help(tmp_path: Path) -> None:
    top = cli(tmp_path, "--help")
    assert top.returncode == 0
    for command in ("demo", "serve", "worker", "sandbox", "send", "doctor"):
        assert command in top.stdout
        done = cli(tmp_path, command, "--help")
        assert done.returncode == 0 and "Usage:" in done.stdout, command
    for group, sub in (
        ("connector", "set"),
        ("queue", "show"),
        ("relay-user", "add"),
        ("api-key", "create"),
        ("admin", "create-user"),
        ("cert", "new"),
    ):
        done = cli(tmp_path, group, sub, "--help")
        assert done.returncode == 0 and "Usage:" in done.stdout, f"{group} {sub}"
