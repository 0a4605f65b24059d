"""Fixtures for the HTTP API tests (helpers in api_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Api, api_settings, serve_api

from m365relay.connectors import ConnectorConfig
from m365relay.runtime import Runtime
from m365relay.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return api_settings(tmp_path / "home")


@pytest.fixture
def api(runtime: Runtime, connector: ConnectorConfig) -> Iterator[Api]:
    yield from serve_api(runtime, connector)
