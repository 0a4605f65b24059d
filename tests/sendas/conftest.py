"""Fixtures for the send-as tests: one connector against the sandbox with two send-as mailboxes besides its
User Name (PROTOCOL.md §15), on SQLite and on PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sendas_support import ALERTS, BILLING

from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update, make_settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "smtp"))  # smtp_support: the SMTP test server


@pytest.fixture
def mailboxes(admin: SandboxAdmin, sandbox: SandboxServer) -> list[str]:
    """The User Name mailbox and two more, as an administrator adds shared mailboxes to the tenant."""
    for address in (BILLING, ALERTS):
        admin.put_mailbox(address, licensed=True)
    demo = sandbox.demo_info
    assert demo is not None
    return [demo["mailbox"].lower(), BILLING, ALERTS]


@pytest.fixture
def sendas_runtime(
    database_url: str, tmp_path: Path, sandbox: SandboxServer, mailboxes: list[str]
) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path / "home", database_url=database_url))
    runtime.connectors.save("default", connector_update(sandbox, send_as=[BILLING, ALERTS]))
    yield runtime
    runtime.close()
