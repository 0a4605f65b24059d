"""The database going away is a temporary condition: every reply says so (503 store-unavailable with
Retry-After, as docs/api.md promises), none is a bare 500 — not even from the middleware that checks the
API key before the body is read. The "last used" stamp of a key is a hint and never fails a request.

PostgreSQL is reached through a proxy (m365relay.sandbox.dblink) that the test cuts: a real outage of the
link, without stopping the server that other tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from api_support import Api, api_settings, serve_api

from m365relay.connectors import ConnectorConfig
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from m365relay.sandbox.dblink import DatabaseLink
from m365relay.settings import Settings
from support import connector_update

pytestmark = pytest.mark.postgres
BODY = {"to": ["a@example.com"], "subject": "outage", "text": "hello"}


@pytest.fixture
def link(pg_url: str) -> Iterator[DatabaseLink]:
    proxy = DatabaseLink.for_url(pg_url).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, link: DatabaseLink) -> Settings:
    return api_settings(tmp_path / "home", database_url=link.url(pg_url))


@pytest.fixture
def connector(runtime: Runtime, sandbox: SandboxServer) -> ConnectorConfig:
    return runtime.connectors.save("default", connector_update(sandbox))


@pytest.fixture
def api(runtime: Runtime, connector: ConnectorConfig) -> Iterator[Api]:
    yield from serve_api(runtime, connector)


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "5"
    assert response.json()["type"] == "https://m365relay.dev/problems/store-unavailable"


def test_a_database_outage_is_503_store_unavailable_everywhere(api: Api, link: DatabaseLink) -> None:
    client = api.client("app")
    link.cut()
    try:
        # POST is authenticated by PreAuthMiddleware before the body is read; GET by the route's dependency.
        assert_store_unavailable(client.post("/messages", json=BODY))
        assert_store_unavailable(client.get("/messages"))
        ready = httpx.get(f"{api.url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.headers["retry-after"] == "5"
    finally:
        link.restore()
    assert client.post("/messages", json=BODY).status_code == 202  # back at once, nothing to restart


def test_a_failing_last_used_stamp_does_not_fail_the_request(api: Api, pg_url: str) -> None:
    # A full disk as PostgreSQL reports it (SQLSTATE 53100 disk_full), but only for the stamp's UPDATE.
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION no_space() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$"
        )
        conn.execute("CREATE TRIGGER full_disk BEFORE UPDATE ON api_keys FOR EACH ROW EXECUTE FUNCTION no_space()")
    response = api.client("app").post("/messages", json=BODY)
    assert response.status_code == 202, response.text
    assert api.runtime.outbox.get(response.json()["id"], events=False).status == "queued"
