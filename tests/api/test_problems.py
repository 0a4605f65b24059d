"""Problem documents for what no endpoint handles itself: unknown paths, wrong methods, an unexpected
exception (generic 500 with a correlation id, nothing leaked), and an unreachable database (503)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import Api, ApiServer, api_settings

from m365relay.runtime import Runtime
from m365relay.web import create_app

PROBLEMS = "https://m365relay.dev/problems/"


def test_unknown_path_is_a_404_problem(api: Api) -> None:
    response = api.client().get("/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": PROBLEMS + "not-found",
        "title": "Not found",
        "status": 404,
        "detail": "nothing at /api/v1/nothing-here",
        "instance": "/api/v1/nothing-here",
    }


def test_wrong_method_is_a_405_problem(api: Api) -> None:
    response = api.client().put("/messages")
    assert response.status_code == 405
    assert response.json()["type"] == PROBLEMS + "method-not-allowed"
    assert "POST" in response.headers["allow"]


def test_path_ids_out_of_range_are_field_errors(api: Api) -> None:
    response = api.client().get(f"/messages/{2**70}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "message_id"


def test_unexpected_error_is_a_generic_500_logged_under_a_correlation_id(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(runtime)

    async def boom() -> None:
        raise RuntimeError("password=hunter2 in a stack trace")

    app.state.api.add_api_route("/boom", boom, include_in_schema=False)
    server = ApiServer(app).start()
    try:
        with caplog.at_level(logging.ERROR, logger="m365relay.web"), httpx.Client() as client:
            response = client.get(f"{server.url}/api/v1/boom")
    finally:
        server.stop()
    assert response.status_code == 500
    problem = response.json()
    assert problem["type"] == PROBLEMS + "internal-error" and problem["status"] == 500
    assert "hunter2" not in response.text and "Traceback" not in response.text
    correlation_id = problem["correlation_id"]
    assert correlation_id in problem["detail"]
    (record,) = [r for r in caplog.records if correlation_id in r.getMessage()]
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])


@pytest.fixture
def database_down(tmp_path: Path) -> Iterator[str]:
    """A server whose database refuses connections (PostgreSQL URL on a closed loopback port)."""
    settings = api_settings(tmp_path / "down", database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    runtime = Runtime(settings, migrate=False)
    server = ApiServer(create_app(runtime)).start()
    try:
        yield server.url
    finally:
        server.stop()
        runtime.close()


def test_unreachable_database_is_503_everywhere(database_down: str) -> None:
    with httpx.Client(base_url=database_down) as client:
        response = client.get("/api/v1/messages", headers={"Authorization": "Bearer m365r_0123abcd_" + "x" * 43})
        assert response.status_code == 503
        assert response.json()["type"] == PROBLEMS + "store-unavailable"
        assert response.headers["retry-after"] == "5"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable" and ready.json()["reasons"][0].startswith("database")
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "m365relay_database_up 0.0" in metrics.text
