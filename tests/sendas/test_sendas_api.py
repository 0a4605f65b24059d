"""The HTTP API with send-as mailboxes: a message posted with `from` a listed mailbox goes through that
mailbox's own sendMail (the API has no From policy; keys send as the message says), and
`GET /connectors` shows the list."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sendas_support import BILLING

from m365relay.connectors import ConnectorConfig
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from api_support import Api, drain, serve_api  # tests/api is put on the path just above


@pytest.fixture
def api(runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin) -> Iterator[Api]:
    admin.put_mailbox(BILLING, licensed=True)
    connector: ConnectorConfig = runtime.connectors.save("default", connector_update(sandbox, send_as=[BILLING]))
    yield from serve_api(runtime, connector)


def test_a_message_from_a_send_as_mailbox_goes_through_it(api: Api, admin: SandboxAdmin) -> None:
    client = api.client()
    assert client.get("/connectors").json()["items"][0]["send_as"] == [BILLING]
    for sender in (BILLING, None):
        body = {"to": ["someone@example.com"], "subject": f"from {sender}", "text": "hi"}
        response = client.post("/messages", json=body | ({"from": sender} if sender else {}))
        assert response.status_code == 202, response.text
    drain(api.runtime)
    through = sorted((m["subject"], m["mailbox"].lower(), m["from"].lower()) for m in admin.messages())
    user_name = api.connector.user_name.lower()
    assert through == sorted([(f"from {BILLING}", BILLING, BILLING), ("from None", user_name, user_name)])
