"""What a CLI invocation carries: settings (built on first use) and the runtime (opened on first use)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import typer

from ..runtime import Runtime
from ..settings import Settings, load_settings


class CliState:
    def __init__(self, config: str | None, home: str | None) -> None:
        self.config = Path(config) if config else None
        self.home = home
        self._runtime: Runtime | None = None

    def settings_with(self, **overrides: Any) -> Settings:
        if self.home:
            overrides.setdefault("home", Path(self.home))
        return load_settings(self.config, **{k: v for k, v in overrides.items() if v is not None})

    @cached_property
    def settings(self) -> Settings:
        return self.settings_with()

    def override(self, **values: Any) -> None:
        """Apply command-line flags to the settings (before the runtime is opened)."""
        assert self._runtime is None, "settings must be overridden before the runtime opens"
        self.__dict__["settings"] = self.settings_with(**values)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.settings)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj
