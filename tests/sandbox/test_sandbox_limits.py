"""The §7 limits: 4 in flight per app+mailbox, requests per 10 minutes, recipients per rolling 24 h."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sandbox_support import graph_error, send_json, simple_message, token

from m365relay.sandbox import SandboxServer


@pytest.fixture
def mailbox(sandbox: SandboxServer) -> str:
    return str(sandbox.demo_info["mailbox"])


def test_fifth_concurrent_request_is_throttled(
    sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str, sandbox_ssl_context: object
) -> None:
    access_token = token(sandbox_api, sandbox)
    sandbox_api.put("/_sandbox/latency", json={"ms": 600})
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    with httpx.Client(base_url=sandbox.url, verify=sandbox_ssl_context, limits=limits, timeout=30) as client:  # type: ignore[arg-type]
        client.get("/_sandbox/stats")  # warm one connection; the others are opened concurrently
        with ThreadPoolExecutor(max_workers=6) as pool:
            responses = list(pool.map(lambda _: send_json(client, mailbox, access_token, simple_message()), range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202, 202, 202, 202, 429, 429]
    throttled = [r for r in responses if r.status_code == 429]
    for response in throttled:
        assert float(response.headers["retry-after"]) > 0
        error = graph_error(response)
        assert error["code"] == "ApplicationThrottled"
        assert "MailboxConcurrency" in error["message"]
    stats = sandbox_api.get("/_sandbox/stats").json()
    assert stats["throttled_429"]["concurrency"] == 2
    key = f"{sandbox.demo_info['client_id']}|{mailbox}"
    assert stats["max_in_flight"][key] == 4
    assert len(sandbox_api.get("/_sandbox/messages").json()) == 4


def test_request_budget_per_10_minutes(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    sandbox_api.put("/_sandbox/limits", json={"requests_per_10min": 3})
    access_token = token(sandbox_api, sandbox)
    for _ in range(3):
        assert send_json(sandbox_api, mailbox, access_token, simple_message()).status_code == 202
    refused = send_json(sandbox_api, mailbox, access_token, simple_message())
    assert refused.status_code == 429
    assert 590 <= float(refused.headers["retry-after"]) <= 600
    sandbox_api.put("/_sandbox/clock", json={"offset_seconds": 601})
    assert send_json(sandbox_api, mailbox, token(sandbox_api, sandbox), simple_message()).status_code == 202
    assert sandbox_api.get("/_sandbox/stats").json()["throttled_429"]["request_budget"] == 1


def test_recipient_budget_per_rolling_day(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    sandbox_api.put("/_sandbox/limits", json={"recipients_per_24h": 5})
    access_token = token(sandbox_api, sandbox)
    three = simple_message(to=["a@example.com", "b@example.com", "c@example.com"])
    assert send_json(sandbox_api, mailbox, access_token, three).status_code == 202
    sandbox_api.put("/_sandbox/clock", json={"offset_seconds": 3600})
    access_token = token(sandbox_api, sandbox)
    refused = send_json(sandbox_api, mailbox, access_token, three)
    assert refused.status_code == 429
    assert graph_error(refused)["code"] == "ErrorSubmissionQuotaExceeded"
    # the first message leaves the window 24 h after it was sent, i.e. 23 h from now
    assert abs(float(refused.headers["retry-after"]) - 23 * 3600) < 5
    two = simple_message(to=["d@example.com", "e@example.com"])
    assert send_json(sandbox_api, mailbox, access_token, two).status_code == 202
    sandbox_api.put("/_sandbox/clock", json={"offset_seconds": 86400 + 1})
    assert send_json(sandbox_api, mailbox, token(sandbox_api, sandbox), three).status_code == 202
    assert sandbox_api.get("/_sandbox/stats").json()["throttled_429"]["recipient_budget"] == 1


def test_reset_restores_limits(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    sandbox_api.put("/_sandbox/limits", json={"concurrency": 1})
    sandbox_api.post("/_sandbox/reset")
    assert sandbox_api.get("/_sandbox/limits").json()["concurrency"] == 4
