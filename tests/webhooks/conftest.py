from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from m365relay.runtime import Runtime
from support import make_settings

FAST = {"webhook_retry_base_seconds": 0.2, "webhook_retry_max_seconds": 1.0, "webhook_poll_interval": 0.05}


@pytest.fixture
def wh_runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on each backend (SQLite, PostgreSQL), with fast webhook retries."""
    rt = Runtime(make_settings(tmp_path / "home", database_url, **FAST))
    yield rt
    rt.close()
