"""The Webhooks page: add (the secret shown once), the same URL rules as the CLI and API, a signed test
event to a real receiver, replay, remove — each in the audit log."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from admin_support import AdminClient, text

from m365relay.client import verify_webhook
from m365relay.connectors import ConnectorConfig
from m365relay.runtime import Runtime

sys.path.insert(0, str(Path(__file__).parents[1] / "webhooks"))
from webhook_support import receiver


def add(client: AdminClient, url: str, events: list[str], connector: str = "default") -> tuple[int, str]:
    csrf = client.csrf("/admin/webhooks")
    response = client.http.post(
        "/admin/webhooks", data={"csrf_token": csrf, "url": url, "connector": connector, "events": events}
    )
    return response.status_code, response.text


def test_add_shows_the_secret_once_and_refuses_bad_input(
    signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig
) -> None:
    status, page = add(signed_in, "ftp://hooks.example.com/x", ["sent"])
    assert status == 400 and "URL must be an http:// or https:// URL with a host" in text(page)
    assert 'value="ftp://hooks.example.com/x"' in page, "what was typed comes back"
    status, page = add(signed_in, "https://hooks.example.com/x", [])
    assert status == 400 and "choose at least one event" in text(page)
    assert runtime.webhooks.list() == [], "nothing was added"
    status, page = add(signed_in, "https://user:hunter2@hooks.example.com/x?token=t", ["sent", "bounced"])
    assert status == 201
    secret = re.search(r"whsec_[A-Za-z0-9+/=]+", page)
    assert secret and "shown once" in text(page)
    again = signed_in.get("/admin/webhooks").text
    assert secret.group(0) not in again and "hunter2" not in again and "token=t" not in again
    assert "https://***@hooks.example.com/x?…" in text(again)
    (endpoint,) = runtime.webhooks.list()
    assert endpoint.events == ("sent", "bounced") and endpoint.connector == "default"
    audit = text(signed_in.get("/admin/audit?kind=webhooks").text)
    assert "Webhook endpoint added" in audit and "hunter2" not in audit and secret.group(0) not in audit


def test_test_replay_and_remove(signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig) -> None:
    with receiver() as hook:
        issued = runtime.webhooks.add(hook.url, "sent", "default")
        endpoint_id = issued.endpoint.id
        tested = signed_in.follow(
            signed_in.post(f"/admin/webhooks/{endpoint_id}/test", csrf=signed_in.csrf("/admin/webhooks"))
        )
        assert "Test event delivered" in text(tested.text)
        (request,) = hook.accepted()
        assert verify_webhook(request.body, request.headers, issued.secret)["data"]["endpoint"] == endpoint_id
    replayed = signed_in.follow(
        signed_in.post(
            f"/admin/webhooks/{endpoint_id}/replay", {"since": "24h"}, csrf=signed_in.csrf("/admin/webhooks")
        )
    )
    assert "0 event(s) of the last 24 hours are queued again" in text(replayed.text)
    refused = signed_in.follow(
        signed_in.post(
            f"/admin/webhooks/{endpoint_id}/replay", {"since": "forever"}, csrf=signed_in.csrf("/admin/webhooks")
        )
    )
    assert "Choose one of the offered time windows" in text(refused.text)
    removed = signed_in.follow(
        signed_in.post(f"/admin/webhooks/{endpoint_id}/remove", csrf=signed_in.csrf("/admin/webhooks"))
    )
    assert f"Endpoint {endpoint_id} removed" in text(removed.text) and runtime.webhooks.list() == []
    audit = text(signed_in.get("/admin/audit?kind=webhooks").text)
    for action in ("Webhook test event", "Webhook events replayed", "Webhook endpoint removed"):
        assert action in audit


def test_a_forged_form_changes_nothing(signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig) -> None:
    response = signed_in.http.post(
        "/admin/webhooks", data={"csrf_token": "forged", "url": "https://hooks.example.com/x", "events": ["sent"]}
    )
    assert response.status_code == 403 and runtime.webhooks.list() == []
