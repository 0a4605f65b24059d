"""Issue 13 over the real API: idempotency keys belong to the API key that made them (item 6), a key bound to
a connector sees only that connector (item 7), connector checks are cached and rate-limited (item 9), URLs
the server hands out come from its public address, not the Host header (item 11)."""

from __future__ import annotations

from pathlib import Path

from api_support import Api, api_settings, serve_api

from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update


def test_idempotency_keys_are_per_api_key(api: Api) -> None:
    api.add_key("other-app", "send", "read")
    mine, theirs = api.client("app"), api.client("other-app")
    body = {"to": ["a@example.com"], "subject": "invoice 7", "text": "Your invoice."}
    claimed = theirs.post("/messages", json={**body, "text": "pre-claimed"}, headers={"Idempotency-Key": "invoice-7"})
    assert claimed.status_code == 202
    first = mine.post("/messages", json=body, headers={"Idempotency-Key": "invoice-7"})
    assert first.status_code == 202, first.text  # today: 409, the other application took the key first
    assert first.json()["id"] != claimed.json()["id"]
    assert "idempotent-replayed" not in first.headers
    again = mine.post("/messages", json=body, headers={"Idempotency-Key": "invoice-7"})
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    same = theirs.post("/messages", json=body, headers={"Idempotency-Key": "invoice-7"})
    assert same.status_code == 409  # within one API key the rule is unchanged
    assert str(first.json()["id"]) not in same.text
    assert api.runtime.outbox.pending_count() == 2


def test_a_bound_key_lists_only_its_connector(api: Api, runtime: Runtime, sandbox: SandboxServer) -> None:
    second = runtime.connectors.save("second", connector_update(sandbox))
    api.add_key("bound", "read", connector_id=second.id)
    bound = api.client("bound").get("/connectors")
    assert bound.status_code == 200
    assert [c["name"] for c in bound.json()["items"]] == ["second"]
    everyone = api.client("reader").get("/connectors").json()["items"]
    assert sorted(c["name"] for c in everyone) == ["default", "second"]


def token_requests(runtime: Runtime) -> float:
    return sum(
        sample.value
        for metric in runtime.metrics.registry.collect()
        if metric.name == "m365relay_token_requests"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def test_checks_are_cached_and_fresh_runs_are_limited_per_connector(api: Api) -> None:
    path = f"/connectors/{api.connector.id}/checks"
    reader = api.client("reader")
    first = reader.get(path)
    assert first.status_code == 200, first.text
    asked = token_requests(api.runtime)
    assert asked >= 1
    for _ in range(5):  # polling is answered from the cache: Entra ID is not asked again
        again = reader.get(path)
        assert again.status_code == 200 and again.json() == first.json()
    assert token_requests(api.runtime) == asked
    admin = api.client("admin")
    statuses = [admin.post(path, json={"send_test_to": "ops@example.com"}).status_code for _ in range(3)]
    assert statuses[:2] == [200, 200]  # a test message is always a fresh run, and they are counted
    assert statuses[2] == 429
    refused = admin.post(path, json={"send_test_to": "ops@example.com"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "checked too often" in refused.json()["detail"]


def test_urls_come_from_the_public_base_url_and_other_hosts_are_refused(tmp_path: Path, sandbox: SandboxServer) -> None:
    runtime = Runtime(api_settings(tmp_path / "home", public_base_url="https://relay.contoso.example"))
    try:
        connector = runtime.connectors.save("default", connector_update(sandbox))
        for api in serve_api(runtime, connector):
            client = api.client("app")
            forged = client.post("/messages", json={"to": ["a@example.com"]}, headers={"Host": "evil.example"})
            assert forged.status_code == 421, forged.text  # today: 202 with Location at evil.example
            assert forged.headers["content-type"] == "application/problem+json"
            sent = client.post("/messages", json={"to": ["a@example.com"], "subject": "x"})
            assert sent.status_code == 202
            location = sent.headers["location"]
            assert location.startswith("https://relay.contoso.example/api/v1/messages/")
            assert sent.json()["status_url"] == location
            client.post("/messages", json={"to": ["b@example.com"], "subject": "y"})
            page = client.get("/messages", params={"limit": 1}).json()
            assert page["next_url"].startswith("https://relay.contoso.example/api/v1/messages?")
            named = client.get("/messages", params={"limit": 1}, headers={"Host": "relay.contoso.example"})
            assert named.status_code == 200
    finally:
        runtime.close()


def test_the_openapi_document_says_what_the_server_does(api: Api) -> None:
    """Issue 13 item 12, the schemathesis findings one by one."""
    client = api.client("admin")
    raw = client.get("/messages/raw")  # was 422: GET /messages/{message_id} took "raw" as an id
    assert raw.status_code == 405 and raw.headers["allow"] == "POST"
    sent = client.post("/messages", json={"to": ["a@example.com"]}).json()["id"]
    wrong = client.put(f"/messages/{sent}")
    assert wrong.status_code == 405 and set(wrong.headers["allow"].split(", ")) >= {"GET", "DELETE"}
    assert client.get("/messages", params={"created_before": "0.5"}).status_code == 422
    assert client.get("/messages", params={"cursor": "12345"}).status_code == 200  # any schema-valid cursor
    spec = api.client(None).get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            answer = operation["responses"].get("422")
            if answer is not None:
                assert answer["content"] == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path)
            if "requestBody" in operation:
                assert "400" in operation["responses"], (method, path)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
