"""The `env` fixture: the outbox on each backend (see tests/support_outbox.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support_outbox import Env


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(database_url, str(tmp_path))
    yield e
    e.close()
