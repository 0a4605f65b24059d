"""Shared fixtures: settings and a runtime in a temporary home, a connector configured against the sandbox,
and database URLs for the backends the outbox must support (SQLite always; PostgreSQL when
M365RELAY_TEST_DATABASE_URL names one — `.ci/run` sets it, so CI always runs both)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures_sandbox import *  # noqa: F403
from m365relay.connectors import ConnectorConfig
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from m365relay.settings import Settings
from support import SandboxAdmin, connector_update, make_settings

PG_URL = os.environ.get("M365RELAY_TEST_DATABASE_URL")
PG_SKIP = "PostgreSQL tests need M365RELAY_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def admin(sandbox: SandboxServer, sandbox_api: object) -> SandboxAdmin:
    import httpx

    assert isinstance(sandbox_api, httpx.Client)
    return SandboxAdmin(sandbox, sandbox_api)


@pytest.fixture
def connector(runtime: Runtime, sandbox: SandboxServer) -> ConnectorConfig:
    return runtime.connectors.save("default", connector_update(sandbox))


def _pg_schema_url(base: str) -> Iterator[str]:
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each outbox contract test runs once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outbox.db'}"
        return
    if not PG_URL:
        pytest.skip(PG_SKIP)
    yield from _pg_schema_url(PG_URL)


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_URL:
        pytest.skip(PG_SKIP)
    yield from _pg_schema_url(PG_URL)
