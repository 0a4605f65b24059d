"""/healthz, /readyz (ready, degraded with reasons, unavailable) and /metrics (event counters and the
figures read from the database at scrape time)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import httpx
import pytest
from api_support import Api, ApiServer, drain
from prometheus_client.parser import text_string_to_metric_families

from m365relay.errors import ConsentMissingError
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from m365relay.web import create_app
from support import SandboxAdmin, connector_update


def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{api.url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_healthz(api: Api) -> None:
    response = httpx.get(f"{api.url}/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_readyz_ready(api: Api) -> None:
    response = httpx.get(f"{api.url}/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "reasons": []}


def test_readyz_degraded_when_a_connector_is_paused_or_a_secret_expires_soon(api: Api, sandbox: SandboxServer) -> None:
    soon = (date.today() + timedelta(days=3)).isoformat()
    api.runtime.connectors.save("soon", connector_update(sandbox, secret_expires=soon))
    other = api.runtime.connectors.save("other", connector_update(sandbox))
    api.runtime.connectors.pause(other.id, ConsentMissingError("no roles in the token"), api.runtime.clock.now())
    response = httpx.get(f"{api.url}/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert any("connector other is paused: no roles in the token" in r for r in body["reasons"])
    assert any("soon" in r and soon in r for r in body["reasons"])


def test_readyz_unavailable_when_no_connector_is_active(api: Api) -> None:
    api.runtime.connectors.pause(api.connector.id, ConsentMissingError("no roles"), api.runtime.clock.now())
    response = httpx.get(f"{api.url}/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["reasons"][0] == "no connector is active"


@pytest.fixture
def bare_server(runtime: Runtime) -> Iterator[str]:
    server = ApiServer(create_app(runtime)).start()
    try:
        yield server.url
    finally:
        server.stop()


def test_readyz_unavailable_without_connectors(bare_server: str) -> None:
    response = httpx.get(f"{bare_server}/readyz")
    assert response.status_code == 503
    assert "no connector is configured" in response.json()["reasons"][0]


def test_metrics_from_the_database_and_from_events(api: Api) -> None:
    client = api.client()
    first = client.post("/messages", json={"to": ["a@example.com"], "text": "x"}).json()["id"]
    before = scrape(api)
    assert before[("m365relay_messages", (("status", "queued"),))] == 1
    assert before[("m365relay_queue_depth", ())] == 1
    assert before[("m365relay_queue_oldest_age_seconds", ())] >= 0
    assert before[("m365relay_messages_accepted_total", (("source", "api"),))] == 1
    assert before[("m365relay_database_up", ())] == 1
    drain(api.runtime)
    client.post("/messages", json={"to": ["b@example.com"], "text": "y"})
    client.delete(f"/messages/{first + 1}")
    after = scrape(api)
    assert after[("m365relay_messages", (("status", "sent"),))] == 1
    assert after[("m365relay_messages", (("status", "cancelled"),))] == 1
    assert after[("m365relay_queue_depth", ())] == 0
    assert after[("m365relay_queue_oldest_age_seconds", ())] == 0
    assert after[("m365relay_messages_accepted_total", (("source", "api"),))] == 2
    assert after[("m365relay_send_seconds_count", (("connector", "default"),))] == 1
    assert after[("m365relay_token_requests_total", (("connector", "default"), ("outcome", "success")))] == 1
    assert after[("m365relay_credential_expiry_seconds", (("connector", "default"),))] > 200 * 86_400
    assert after[("m365relay_connector_paused", (("connector", "default"),))] == 0
    api.runtime.connectors.pause(api.connector.id, ConsentMissingError("no roles"), api.runtime.clock.now())
    assert scrape(api)[("m365relay_connector_paused", (("connector", "default"),))] == 1


def test_metrics_count_graph_errors_and_deferrals(api: Api, admin: SandboxAdmin) -> None:
    admin.faults({"sendMail": {"count": 1, "status": 503}})
    message_id = api.client().post("/messages", json={"to": ["a@example.com"], "text": "x"}).json()["id"]
    drain(api.runtime)
    assert api.runtime.outbox.get(message_id).status == "sent"
    samples = scrape(api)
    errors = {labels: value for (name, labels), value in samples.items() if name == "m365relay_graph_errors_total"}
    assert sum(errors.values()) == 1 and all(("connector", "default") in labels for labels in errors), errors
    deferrals = [v for (name, _), v in samples.items() if name == "m365relay_deferrals_total"]
    assert sum(deferrals) == 1
    assert samples[("m365relay_messages_finished_total", (("status", "sent"),))] == 1
