"""Fixtures for the fidelity tests: an SMTP relay against the sandbox (as in tests/smtp), the HTTP API,
and the shared corpus (read in place beside the repository, never copied into it)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "smtp"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))

from smtp_support import FAST_PASSWORDS, PASSWORD, USER, Relay, ServerThread

from m365relay.access.relay_users import RelayUserStore
from m365relay.ingress.smtp import SmtpServer
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from m365relay.settings import load_settings
from support import connector_update

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "real"


@pytest.fixture(scope="session")
def corpus() -> list[Path]:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS} (it lives beside the repository, never inside it)")
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "SOURCES.md")


@pytest.fixture
def start_relay(tmp_path: Path, sandbox: SandboxServer) -> Iterator[Any]:
    started: list[Relay] = []

    def start(**overrides: Any) -> Relay:
        home = tmp_path / f"relay{len(started)}"
        fast = {"poll_interval": 0.05, "retry_base_seconds": 0.2, "retry_max_seconds": 2.0, "api_rate_limit": 1e6}
        settings = load_settings(environ={}, home=home, **{**fast, **overrides})
        runtime = Runtime(settings)
        connector = runtime.connectors.save("default", connector_update(sandbox))
        users = RelayUserStore(runtime.db, FAST_PASSWORDS, runtime.clock)
        users.add(USER, PASSWORD)
        thread = ServerThread(SmtpServer(runtime, host="127.0.0.1", port=0, users=users)).start()
        relay = Relay(runtime, users, connector, thread, "127.0.0.1")
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.close_clients()
        relay.thread.stop()
        relay.runtime.close()
