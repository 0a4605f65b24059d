"""Test connection (the doctor's six checks as green/amber/red/grey lines with remedies) and Send test email
(a real message through the sandbox's Graph, with its request id), from the connector page."""

from __future__ import annotations

import re
from html import unescape

from admin_support import AdminClient
from sqlalchemy import select

from m365relay.connectors import ConnectorConfig
from m365relay.db.models import AuditRow
from m365relay.runtime import Runtime
from support import SandboxAdmin

PAGE = "/admin/connectors/smtp"


def check_lines(page: str) -> dict[str, tuple[str, str]]:
    """{check id: (status, text of the line)} from the page."""
    found = {}
    for check, status, body in re.findall(
        r'<li class="check check-\w+" data-check="(\w+)" data-status="(\w+)">(.*?)</li>', page, re.S
    ):
        found[check] = (status, " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split()))
    return found


def test_test_connection_runs_the_doctors_checks_in_the_manuals_order(
    signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.grant("Mail.Send", "Mail.ReadWrite")
    response = signed_in.post(f"{PAGE}/test", {"send_test_to": "it@contoso.com"})
    assert response.status_code == 303 and response.headers["location"] == f"{PAGE}#test"
    page = signed_in.follow(response).text
    lines = check_lines(page)
    assert list(lines) == ["config", "tenant", "app", "credential", "permission", "mailbox", "read"]
    assert {status for status, _text in lines.values()} == {"pass"}, lines
    assert "Everything checked passed" in page
    assert lines["mailbox"][1].startswith("✓ 6. The mailbox can send — Passed")
    assert "Graph request id" in lines["mailbox"][1]
    [captured] = admin.messages()
    assert "it@contoso.com" in str(captured)
    with runtime.db.read() as session:
        entry = session.scalars(select(AuditRow).where(AuditRow.action == "connector.test")).one()
    assert entry.detail["results"]["permission"] == "pass" and entry.detail["to"] == "it@contoso.com"
    assert check_lines(signed_in.get(PAGE).text) == {}, "shown once, after the test that made them"


def test_without_an_address_the_mailbox_check_is_grey(
    signed_in: AdminClient, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    lines = check_lines(signed_in.follow(signed_in.post(f"{PAGE}/test", {"send_test_to": ""})).text)
    assert lines["mailbox"][0] == "skip" and "Not run" in lines["mailbox"][1]
    assert lines["permission"][0] == "warn", "Mail.ReadWrite (optional) is not granted in the demo tenant"
    assert admin.messages() == []


def test_missing_consent_is_red_and_points_at_the_consent_button(
    signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.grant()
    page = signed_in.follow(signed_in.post(f"{PAGE}/test")).text
    status, text = check_lines(page)["permission"]
    assert status == "fail"
    assert "admin consent has not been granted" in text
    assert f"{runtime.settings.effective_public_base_url}{PAGE}#consent" in text, "this page's button, not a link"
    assert "adminconsent?" not in text
    assert check_lines(page)["mailbox"][0] == "skip"


def test_a_wrong_secret_is_red_with_the_remedy(
    signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.delete_secret(admin.demo["secret_id"])
    lines = check_lines(signed_in.follow(signed_in.post(f"{PAGE}/test")).text)
    assert lines["app"][0] == "pass" and lines["credential"][0] == "fail"
    assert "AADSTS7000215" in lines["credential"][1] and "What to do:" in lines["credential"][1]


def test_send_test_email_shows_graphs_request_id(
    signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    response = signed_in.post(f"{PAGE}/send-test", {"to": "helpdesk@contoso.com"})
    assert response.headers["location"] == f"{PAGE}#send"
    page = unescape(signed_in.follow(response).text)
    assert "Test email sent to helpdesk@contoso.com" in page
    request_id = re.search(r'Graph request id: <code class="rid">([^<]+)</code>', page)
    assert request_id, page
    [captured] = admin.messages()
    assert "helpdesk@contoso.com" in str(captured)
    with runtime.db.read() as session:
        entry = session.scalars(select(AuditRow).where(AuditRow.action == "connector.test_email")).one()
    assert entry.detail == {"to": "helpdesk@contoso.com", "outcome": "sent", "request_id": request_id.group(1)}


def test_send_test_email_failure_shows_the_error_and_remedy(
    signed_in: AdminClient, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.put_mailbox(connector.user_name, licensed=False)
    page = unescape(signed_in.follow(signed_in.post(f"{PAGE}/send-test", {"to": "helpdesk@contoso.com"})).text)
    assert "The test email to helpdesk@contoso.com was not sent" in page
    assert "MailboxNotEnabledForRESTAPI" in page and "What to do:" in page


def test_a_bad_address_is_refused_next_to_its_field(
    signed_in: AdminClient, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    for path, name in ((f"{PAGE}/send-test", "to"), (f"{PAGE}/test", "send_test_to")):
        response = signed_in.post(path, {name: "not an address <b>"})
        assert response.status_code == 422
        page = response.text
        assert re.search(rf'<p class="error" id="{name}-error">.*is not one e-mail address', page)
        assert "not an address <b>" not in page
        assert 'value="not an address &lt;b&gt;"' in page, "what was typed stays, as text"
    empty = signed_in.post(f"{PAGE}/send-test", {"to": ""})
    assert "Type the address the test message should go to" in unescape(empty.text)
    assert admin.messages() == []


def test_nothing_to_test_without_a_connector(signed_in: AdminClient) -> None:
    for path, section in ((f"{PAGE}/test", "#test"), (f"{PAGE}/send-test", "#send")):
        response = signed_in.post(path, {"to": "a@contoso.com"})
        assert response.headers["location"] == f"{PAGE}{section}"
        assert "Nothing to test yet" in signed_in.follow(response).text


def test_a_passing_test_lets_a_paused_connector_try_its_mail_now(
    signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    from datetime import timedelta

    from m365relay.errors import InvalidSecretError

    runtime.connectors.pause(
        connector.id, InvalidSecretError("AADSTS7000215"), runtime.clock.now() + timedelta(hours=1)
    )
    page = signed_in.follow(signed_in.post(f"{PAGE}/test")).text
    assert "its waiting mail is tried again now" in page
    assert runtime.connectors.get("default").next_probe_at == runtime.clock.now()
