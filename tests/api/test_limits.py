"""Per-key rate limits (429 + Retry-After, on a manual clock: no timing in the assertions) and the request
body limit (413, before the body is read when Content-Length says it is too large, and on the stream
when the body comes chunked)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Api, api_settings, serve_api

from m365relay.clock import ManualClock
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update

MESSAGE = {"to": ["a@example.com"], "text": "x"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def limited(tmp_path: Path, sandbox: SandboxServer, clock: ManualClock) -> Iterator[Api]:
    settings = api_settings(tmp_path / "limited", api_rate_limit=1.0, api_max_body_bytes=2000)
    runtime = Runtime(settings, clock=clock)
    try:
        connector = runtime.connectors.save("default", connector_update(sandbox))
        yield from serve_api(runtime, connector)
    finally:
        runtime.close()


def test_rate_limit_allows_a_burst_of_twice_the_rate_then_429(limited: Api, clock: ManualClock) -> None:
    client = limited.client()
    assert [client.get("/connectors").status_code for _ in range(2)] == [200, 200]
    refused = client.post("/messages", json=MESSAGE)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    problem = refused.json()
    assert (
        problem["type"] == "https://m365relay.dev/problems/rate-limited"
        and "1 requests per second" in problem["detail"]
    )
    assert limited.runtime.outbox.pending_count() == 0
    # Another key has its own bucket.
    assert limited.client("reader").get("/connectors").status_code == 200
    clock.advance(1.0)
    assert client.post("/messages", json=MESSAGE).status_code == 202
    assert client.get("/connectors").status_code == 429
    clock.advance(10.0)  # the bucket refills up to the burst, not beyond
    assert [client.get("/connectors").status_code for _ in range(3)] == [200, 200, 429]


def test_retry_after_rounds_up_to_whole_seconds(limited: Api, clock: ManualClock) -> None:
    client = limited.client()
    for _ in range(2):
        client.get("/connectors")
    clock.advance(0.25)
    assert client.get("/connectors").headers["retry-after"] == "1"


def test_declared_oversize_body_is_refused_before_it_is_read(limited: Api) -> None:
    response = limited.client().post(
        "/messages", json={**MESSAGE, "text": "x" * 5000}, headers={"Idempotency-Key": "big"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "https://m365relay.dev/problems/payload-too-large"
    assert "2000 bytes" in response.json()["detail"]
    assert limited.runtime.outbox.pending_count() == 0


def test_chunked_oversize_body_is_refused_on_the_stream(limited: Api) -> None:
    def body() -> Iterator[bytes]:
        yield b"To: a@example.com\r\nSubject: big\r\n\r\n"
        for _ in range(10):
            yield b"y" * 500 + b"\r\n"

    response = limited.client().post("/messages/raw", content=body(), headers={"Content-Type": "message/rfc822"})
    assert response.status_code == 413
    assert response.json()["type"] == "https://m365relay.dev/problems/payload-too-large"
    assert limited.runtime.outbox.pending_count() == 0


def test_chunked_body_under_the_limit_is_accepted(limited: Api) -> None:
    def body() -> Iterator[bytes]:
        yield b"To: a@example.com\r\nSubject: small\r\n\r\n"
        yield b"z" * 500 + b"\r\n"

    response = limited.client().post("/messages/raw", content=body(), headers={"Content-Type": "message/rfc822"})
    assert response.status_code == 202, response.text


@pytest.fixture
def shallow(tmp_path: Path, sandbox: SandboxServer, clock: ManualClock) -> Iterator[Api]:
    runtime = Runtime(api_settings(tmp_path / "shallow", max_queue_depth=2), clock=clock)
    try:
        connector = runtime.connectors.save("default", connector_update(sandbox))
        yield from serve_api(runtime, connector)
    finally:
        runtime.close()


def test_a_full_queue_answers_503_with_retry_after_and_accepts_again_once_drained(
    shallow: Api, clock: ManualClock
) -> None:
    with shallow.client() as client:
        for _ in range(2):
            assert client.post("/messages", json=MESSAGE).status_code == 202
        clock.advance(1.1)  # the queue figures are re-read at most once a second
        refused = client.post("/messages", json=MESSAGE)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "60"
        problem = refused.json()
        assert problem["type"].endswith("/queue-full") and "2 messages" in problem["detail"]
        assert len(shallow.runtime.outbox.list()) == 2, "nothing was accepted"
        for message in shallow.runtime.outbox.list():
            shallow.runtime.outbox.cancel(message.id)
        clock.advance(1.1)
        assert client.post("/messages", json=MESSAGE).status_code == 202
