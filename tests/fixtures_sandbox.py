"""Pytest fixtures for the sandbox; the root conftest does `from fixtures_sandbox import *`.

- `sandbox_server` (session): a demo `SandboxServer` on a free port in a temporary directory.
- `sandbox` (function): the same server, reset to its seed before the test (`POST /_sandbox/reset`).
- `sandbox_api` (function): an `httpx.Client` on the sandbox URL that trusts the sandbox CA.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from m365relay.sandbox import SandboxServer

__all__ = ["sandbox", "sandbox_api", "sandbox_server", "sandbox_ssl_context"]


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("sandbox"), demo=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sandbox_ssl_context(sandbox_server: SandboxServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sandbox_server.ca_file))


@pytest.fixture
def sandbox(sandbox_server: SandboxServer, sandbox_ssl_context: ssl.SSLContext) -> Iterator[SandboxServer]:
    with httpx.Client(base_url=sandbox_server.url, verify=sandbox_ssl_context) as client:
        client.post("/_sandbox/reset").raise_for_status()
    yield sandbox_server


@pytest.fixture
def sandbox_api(sandbox: SandboxServer, sandbox_ssl_context: ssl.SSLContext) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, verify=sandbox_ssl_context, timeout=30) as client:
        yield client
