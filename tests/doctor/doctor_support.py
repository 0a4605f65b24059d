"""Helpers for the doctor tests: run the checks as a library and as the real CLI (a subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from m365relay.connectors import ConnectorConfig
from m365relay.doctor import ORDER, CheckResult, run_checks
from m365relay.runtime import Runtime

WRONG_SECRET = "wrongQ~0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"


def checks(runtime: Runtime, connector: ConnectorConfig, **kw: Any) -> dict[str, CheckResult]:
    async def go() -> list[CheckResult]:
        try:
            return await run_checks(runtime, connector, **kw)
        finally:
            await runtime.sender.aclose()

    results = asyncio.run(go())
    assert [r.id for r in results] == list(ORDER), "six results, in the manual's order"
    return {r.id: r for r in results}


def statuses(results: dict[str, CheckResult]) -> dict[str, str]:
    return {key: r.status for key, r in results.items()}


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str

    def line(self, number: int) -> str:
        """The output line of check ``number`` (its symbol, number and title, then the detail)."""
        for line in self.stdout.splitlines():
            if len(line) > 2 and line[2:].startswith(f"{number} "):
                return line
        raise AssertionError(f"no line for check {number} in:\n{self.stdout}")

    def remedy_after(self, number: int) -> str:
        lines = self.stdout.splitlines()
        index = lines.index(self.line(number))
        following = lines[index + 1] if index + 1 < len(lines) else ""
        assert following.strip().startswith("what to do:"), f"no remedy after check {number}:\n{self.stdout}"
        return following

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
        return data


def cli(runtime: Runtime, *args: str) -> CliRun:
    env = {**os.environ, "M365RELAY_HOME": str(runtime.settings.home), "COLUMNS": "400", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "m365relay", *args], capture_output=True, text=True, env=env, timeout=120
    )
    return CliRun(done.returncode, done.stdout, done.stderr)
