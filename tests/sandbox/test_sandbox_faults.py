"""Fault injection per stage: HTTP statuses with Retry-After, connection resets, slow answers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import msal
import pytest
import requests
from sandbox_support import graph_error, send_json, simple_message, token, token_request

from m365relay.sandbox import SandboxServer


@pytest.fixture
def mailbox(sandbox: SandboxServer) -> str:
    return str(sandbox.demo_info["mailbox"])


def test_token_503_counted_then_recovers(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    sandbox_api.put("/_sandbox/faults", json={"token": {"count": 2, "status": 503, "retry_after": "3"}})
    for _ in range(2):
        response = token_request(sandbox_api, sandbox)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert response.json()["error"] == "temporarily_unavailable"
    assert token_request(sandbox_api, sandbox).status_code == 200
    assert sandbox_api.get("/_sandbox/faults").json()["token"]["count"] == 0


def test_send_mail_429_with_fractional_retry_after_delivers_nothing(
    sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str
) -> None:
    access_token = token(sandbox_api, sandbox)
    sandbox_api.put("/_sandbox/faults", json={"sendMail": {"count": 1, "status": 429, "retry_after": "2.5"}})
    response = send_json(sandbox_api, mailbox, access_token, simple_message())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2.5"
    assert graph_error(response)["code"] == "TooManyRequests"
    assert sandbox_api.get("/_sandbox/messages").json() == []
    assert send_json(sandbox_api, mailbox, access_token, simple_message()).status_code == 202
    stats = sandbox_api.get("/_sandbox/stats").json()
    assert stats["throttled_429"]["injected"] == 1


@pytest.mark.parametrize("status", [503, 504])
def test_graph_5xx(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str, status: int) -> None:
    access_token = token(sandbox_api, sandbox)
    sandbox_api.put("/_sandbox/faults", json={"graph": {"count": 1, "status": status}})
    response = send_json(sandbox_api, mailbox, access_token, simple_message())
    assert response.status_code == status
    assert response.headers["request-id"]


def test_reset_aborts_the_connection(sandbox: SandboxServer, sandbox_api: httpx.Client, mailbox: str) -> None:
    access_token = token(sandbox_api, sandbox)
    sandbox_api.put("/_sandbox/faults", json={"sendMail": {"count": 1, "kind": "reset"}})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        send_json(sandbox_api, mailbox, access_token, simple_message())
    assert sandbox_api.get("/_sandbox/messages").json() == []
    assert send_json(sandbox_api, mailbox, access_token, simple_message()).status_code == 202


def test_reset_on_upload_and_discovery(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    sandbox_api.put("/_sandbox/faults", json={"discovery": {"count": 1, "kind": "reset"}})
    path = f"/{sandbox.demo_info['tenant_id']}/v2.0/.well-known/openid-configuration"
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        sandbox_api.get(path)
    assert sandbox_api.get(path).status_code == 200
    sandbox_api.put("/_sandbox/faults", json={"upload": {"count": 1, "kind": "reset"}})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        sandbox_api.put("/api/v2.0/Users('x')/AttachmentSessions('y')?authtoken=z", content=b"1")


def test_slow_answers_normally(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    sandbox_api.put("/_sandbox/faults", json={"token": {"count": 1, "kind": "slow", "delay_ms": 300}})
    started = time.monotonic()
    assert token_request(sandbox_api, sandbox).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_seeded_probability_is_repeatable(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    def run() -> list[int]:
        sandbox_api.put("/_sandbox/faults", json={"seed": 7, "token": {"probability": 0.5, "status": 503}})
        return [token_request(sandbox_api, sandbox).status_code for _ in range(12)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 503}


def test_bad_fault_config_is_refused(sandbox_api: httpx.Client) -> None:
    assert sandbox_api.put("/_sandbox/faults", json={"nowhere": {"status": 503}}).status_code == 400
    assert sandbox_api.put("/_sandbox/faults", json={"token": {"kind": "explode"}}).status_code == 400
    assert sandbox_api.get("/_sandbox/faults").json() == {}


@pytest.fixture
def http_session(sandbox: SandboxServer) -> Iterator[requests.Session]:
    session = requests.Session()
    session.verify = str(sandbox.ca_file)
    session.trust_env = False
    yield session
    session.close()


def test_msal_sees_token_endpoint_unavailable(
    sandbox: SandboxServer, sandbox_api: httpx.Client, http_session: requests.Session
) -> None:
    info = sandbox.demo_info
    app = msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=info["secret_value"],
        authority=f"{sandbox.url}/{info['tenant_id']}",
        instance_discovery=False,
        http_client=http_session,
    )
    sandbox_api.put("/_sandbox/faults", json={"token": {"count": 1, "status": 429, "retry_after": "1"}})
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" not in result
    assert result.get("error") == "temporarily_unavailable"
