"""Fixtures for the SMTP relay tests: ``start_relay(**settings)`` starts a relay (its own home, a connector
against the sandbox, relay user ``app``) on a free port; ``relay`` is one with the default settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from smtp_support import FAST_PASSWORDS, PASSWORD, USER, Relay, ServerThread, StartRelay

from m365relay.access.relay_users import RelayUserStore
from m365relay.clock import Clock
from m365relay.ingress.smtp import SmtpServer
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from m365relay.settings import load_settings
from support import connector_update


@pytest.fixture
def start_relay(tmp_path: Path, sandbox: SandboxServer) -> Iterator[StartRelay]:
    started: list[Relay] = []

    def start(
        *, host: str = "127.0.0.1", database_url: str | None = None, clock: Clock | None = None, **overrides: Any
    ) -> Relay:
        home = tmp_path / f"relay{len(started)}"
        fast = {"poll_interval": 0.05, "retry_base_seconds": 0.2, "retry_max_seconds": 2.0}
        settings = load_settings(environ={}, home=home, database_url=database_url, **{**fast, **overrides})
        runtime = Runtime(settings, clock=clock)
        connector = runtime.connectors.save("default", connector_update(sandbox))
        users = RelayUserStore(runtime.db, FAST_PASSWORDS, runtime.clock)
        users.add(USER, PASSWORD)
        try:
            thread = ServerThread(SmtpServer(runtime, host=host, port=0, users=users)).start()
        except BaseException:
            runtime.close()
            raise
        relay = Relay(runtime, users, connector, thread, host)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.close_clients()
        relay.thread.stop()
        relay.runtime.close()


@pytest.fixture
def relay(start_relay: StartRelay) -> Relay:
    return start_relay()
