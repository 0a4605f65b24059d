"""Fixtures for the admin UI tests (helpers in admin_support.py).

The runtime here runs on a ManualClock (starting now), so idle timeouts and the sign-in lockout window are
tested by moving time, not by waiting; ``serve`` runs without its dispatcher unless a test asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from admin_support import AdminClient, LiveServer, create_admin, free_port

from m365relay.clock import ManualClock
from m365relay.runtime import Runtime
from m365relay.settings import Settings
from support import make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home", http_port=free_port())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def runtime(settings: Settings, clock: ManualClock) -> Iterator[Runtime]:
    rt = Runtime(settings, clock=clock)
    yield rt
    rt.close()


@pytest.fixture
def live(runtime: Runtime) -> Iterator[LiveServer]:
    create_admin(runtime)
    server = LiveServer(runtime).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def new_client(live: LiveServer) -> Iterator[Callable[[], AdminClient]]:
    made: list[AdminClient] = []

    def make() -> AdminClient:
        made.append(AdminClient(live.url))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(new_client: Callable[[], AdminClient]) -> AdminClient:
    return new_client()


@pytest.fixture
def signed_in(client: AdminClient) -> AdminClient:
    response = client.login()
    assert response.status_code == 303, response.text
    return client
