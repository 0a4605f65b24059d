"""The admin UI: a message's recipients with their states, the bounced filter, the suppression page (remove and
add, audited), and the overview's bounce rate per connector with its warning above 5 %."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from admin_support import AdminClient, LiveServer, create_admin, free_port, text
from sqlalchemy import select

from m365relay.connectors import ConnectorConfig
from m365relay.db.models import AuditRow
from m365relay.graph.mime import OutgoingMessage
from m365relay.outbox.recipients import BOUNCED, set_state
from m365relay.runtime import Runtime
from m365relay.settings import Settings
from support import make_settings

NOBODY = "nobody@contoso.onmicrosoft.com"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home", http_port=free_port())


@pytest.fixture
def client(runtime: Runtime) -> Iterator[AdminClient]:
    create_admin(runtime)
    server = LiveServer(runtime).start()
    made = AdminClient(server.url)
    try:
        assert made.login().status_code == 303
        yield made
    finally:
        made.close()
        server.stop()


def bounced_message(runtime: Runtime, connector: ConnectorConfig) -> int:
    raw = f"From: {connector.user_name}\r\nTo: {NOBODY}, ok@example.com\r\nSubject: Hi\r\n\r\nHi\r\n".encode()
    message_id = runtime.outbox.enqueue(connector.id, OutgoingMessage.from_bytes(raw)).id
    [claimed] = runtime.outbox.claim("w", connector.id, 1, 60)
    runtime.outbox.mark_sent(claimed.id, "w", "req-1")
    at = datetime.now(UTC)
    diagnostic = "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    with runtime.db.write() as session:
        assert set_state(session, message_id, NOBODY, BOUNCED, status="5.1.10", diagnostic=diagnostic, at=at)
        assert runtime.suppressions.from_bounce(
            session,
            connector_id=connector.id,
            address=NOBODY,
            status="5.1.10",
            diagnostic=diagnostic,
            bounced_at=at,
            message_id=message_id,
        )
    return message_id


def test_message_page_filter_overview_and_suppressions(
    client: AdminClient, runtime: Runtime, connector: ConnectorConfig
) -> None:
    message_id = bounced_message(runtime, connector)
    page = text(client.get(f"/admin/outbox/{message_id}").text)
    assert f"{NOBODY} bounced 5.1.10" in page and "RecipientNotFound" in page and "ok@example.com sent" in page
    listed = client.get("/admin/outbox", params={"status": "bounced"})
    assert listed.status_code == 200 and f'href="/admin/outbox/{message_id}"' in listed.text

    overview = client.get("/admin/").text
    assert "Bounce rate" in overview and "50.0 %" in overview and "over 5 %" in overview
    assert "of its recipients bounced" in text(overview)

    suppressions = client.get("/admin/suppressions").text
    assert NOBODY in suppressions and f'href="/admin/outbox/{message_id}"' in suppressions
    removed = client.post("/admin/suppressions/remove", {"address": NOBODY, "connector": str(connector.id)})
    assert removed.status_code == 303
    assert NOBODY not in client.follow(removed).text.split("Suppress an address")[0].split("Suppressed addresses")[1]
    added = client.post(
        "/admin/suppressions/add", {"address": "stop@example.com", "connector": str(connector.id), "reason": "asked"}
    )
    assert "stop@example.com is suppressed" in text(client.follow(added).text)
    bad = client.post("/admin/suppressions/add", {"address": "not an address", "connector": str(connector.id)})
    assert "Nothing was changed" in text(client.follow(bad).text)
    assert [e.address for e in runtime.suppressions.list()] == ["stop@example.com"]
    with runtime.db.read() as session:
        actions = {(a.actor, a.action, a.target) for a in session.scalars(select(AuditRow))}
    assert any(a[1:] == ("suppression.remove", NOBODY) and a[0].startswith("web:") for a in actions)
    assert any(a[1:] == ("suppression.add", "stop@example.com") and a[0].startswith("web:") for a in actions)


def test_the_library_drops_suppressed_recipients_and_refuses_when_none_is_left(
    runtime: Runtime, connector: ConnectorConfig
) -> None:
    from m365relay import Relay
    from m365relay.suppression import AllSuppressedError

    bounced_message(runtime, connector)
    relay = Relay(runtime=runtime)
    with pytest.raises(AllSuppressedError) as refused:
        relay.enqueue(to=[NOBODY.upper()], subject="Again", text="hi")
    assert "is suppressed after a hard bounce on" in refused.value.message and "(5.1.10)" in refused.value.message
    message_id = relay.enqueue(to=[NOBODY, "ok@example.com"], subject="Mixed", text="hi")
    record = runtime.outbox.get(message_id)
    assert record.recipients == ("ok@example.com",)
    suppressed = [e for e in record.events if e.kind == "suppressed"]
    assert len(suppressed) == 1 and NOBODY in (suppressed[0].detail or "")
