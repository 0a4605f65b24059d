"""Grant admin consent: the button's link, the sandbox's consent page, and the callback at the manual's
Redirect URL (/admin/connectors/SMTP.aspx) — its state check, the outcome in plain words, the audit log, and
the confirmation from a fresh token's roles."""

from __future__ import annotations

import re
import ssl
from html import unescape
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from admin_support import AdminClient, LiveServer
from sqlalchemy import select

from m365relay.connectors import ConnectorConfig
from m365relay.db.models import AuditRow
from m365relay.errors import ConsentMissingError
from m365relay.runtime import Runtime
from support import SandboxAdmin

CALLBACK = "/admin/connectors/SMTP.aspx"


@pytest.fixture
def unconsented(admin: SandboxAdmin, runtime: Runtime, connector: ConnectorConfig) -> ConnectorConfig:
    """The demo app with the manual's Redirect URL registered and nothing consented yet."""
    redirect = runtime.settings.effective_public_base_url + CALLBACK
    admin.patch_app(granted_roles=[], redirect_uris=[redirect], requested_permissions=["Mail.Send", "Mail.ReadWrite"])
    return connector


def start(client: AdminClient) -> str:
    response = client.post("/admin/connectors/smtp/consent")
    assert response.status_code == 303
    return str(response.headers["location"])


def answer_at_microsoft(url: str, action: str, ssl_context: ssl.SSLContext) -> str:
    """The Global Administrator on the (sandbox's) consent page: Accept or Cancel. Returns where it redirects."""
    with httpx.Client(verify=ssl_context) as browser:
        page = browser.get(url)
        assert page.status_code == 200, page.text
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        answer = browser.post(
            url.split("?", maxsplit=1)[0], data={**{k: unescape(v) for k, v in fields.items()}, "action": action}
        )
    assert answer.status_code == 302, answer.text
    return str(answer.headers["location"])


def consent_entries(runtime: Runtime) -> list[AuditRow]:
    with runtime.db.read() as session:
        return list(
            session.scalars(
                select(AuditRow).where(AuditRow.action.startswith("connector.consent")).order_by(AuditRow.id)
            )
        )


def come_back(client: AdminClient, location: str) -> str:
    """Follow Microsoft's redirect to the callback, then the callback's redirect to the page."""
    back = urlsplit(location)
    response = client.get(f"{back.path}?{back.query}")
    assert response.status_code == 303 and response.headers["location"] == "/admin/connectors/smtp#consent"
    return unescape(client.follow(response).text)


def test_the_consent_link_names_the_connectors_cloud_tenant_and_redirect_url(
    signed_in: AdminClient, live: LiveServer, unconsented: ConnectorConfig
) -> None:
    link = urlsplit(start(signed_in))
    assert f"{link.scheme}://{link.netloc}" == unconsented.cloud.login_url
    assert link.path == f"/{unconsented.tenant_id}/v2.0/adminconsent"
    query = parse_qs(link.query)
    assert query["client_id"] == [unconsented.client_id]
    assert query["scope"] == [unconsented.cloud.scope]
    assert query["redirect_uri"] == [live.url + CALLBACK], "the Redirect URL the page tells admins to register"
    assert len(query["state"][0]) > 40


def test_accept_grants_mail_send_and_the_page_confirms_it_from_a_token(
    signed_in: AdminClient,
    runtime: Runtime,
    unconsented: ConnectorConfig,
    sandbox_ssl_context: ssl.SSLContext,
) -> None:
    before = unescape(signed_in.get("/admin/connectors/smtp").text)
    assert "m365relay cannot see the API permissions page" in before
    location = answer_at_microsoft(start(signed_in), "accept", sandbox_ssl_context)
    assert urlsplit(location).path == CALLBACK
    page = come_back(signed_in, location)
    assert "Admin consent granted" in page
    assert f"Confirmed: a fresh token for app {unconsented.client_id} carries Mail.Send, Mail.ReadWrite." in page
    assert "Admin consent granted on" in page and "the token carries Mail.Send" in page, "the checklist's step 3"
    [entry] = consent_entries(runtime)
    assert entry.action == "connector.consent" and entry.actor == "web:alice"
    assert entry.detail == {"outcome": "granted", "mail_send": True, "roles": ["Mail.Send", "Mail.ReadWrite"]}
    assert runtime.connectors.get(unconsented.id).consent_granted_at == entry.at, "the date is kept"


def test_cancel_is_reported_in_plain_words(
    signed_in: AdminClient, runtime: Runtime, unconsented: ConnectorConfig, sandbox_ssl_context: ssl.SSLContext
) -> None:
    location = answer_at_microsoft(start(signed_in), "cancel", sandbox_ssl_context)
    assert parse_qs(urlsplit(location).query)["error"] == ["consent_required"]
    page = come_back(signed_in, location)
    assert "Consent was declined" in page
    assert "The administrator chose Cancel on Microsoft's consent page, so nothing was granted." in page
    assert "Click Grant admin consent again and choose Accept." in page
    assert "Admin consent was not granted on" in page, "the checklist's step 3"
    [entry] = consent_entries(runtime)
    assert entry.detail == {"outcome": "declined", "error": "consent_required", "code": "AADSTS65004"}
    assert runtime.connectors.get(unconsented.id).consent_granted_at is None


@pytest.mark.parametrize(
    ("error", "description", "says"),
    [
        ("access_denied", "", "The request was cancelled or refused at Microsoft."),
        ("permission_denied", "The admin canceled the request", "nothing was granted"),
        ("invalid_request", "AADSTS90094: The grant requires admin permission.", "may not grant consent"),
        ("invalid_request", "AADSTS650056: Misconfigured application.", "Application permissions › Mail.Send"),
        ("unexpected_thing", "Something+odd+happened", "Microsoft said: Something odd happened"),
    ],
)
def test_errors_come_back_in_plain_words(
    signed_in: AdminClient, unconsented: ConnectorConfig, error: str, description: str, says: str
) -> None:
    state = parse_qs(urlsplit(start(signed_in)).query)["state"][0]
    query = {"admin_consent": "True", "error": error, "error_description": description, "state": state}
    page = come_back(signed_in, f"{CALLBACK}?{urlencode(query)}")
    assert says in page


def test_a_state_that_does_not_match_is_refused(
    signed_in: AdminClient, runtime: Runtime, unconsented: ConnectorConfig, admin: SandboxAdmin
) -> None:
    start(signed_in)
    forged = {"admin_consent": "True", "tenant": unconsented.tenant_id, "state": "forged-state"}
    page = come_back(signed_in, f"{CALLBACK}?{urlencode(forged)}")
    assert "Microsoft's answer was not accepted" in page
    assert "does not match the consent request started in this session" in page
    assert "Nothing was recorded." in page
    [entry] = consent_entries(runtime)
    assert entry.action == "connector.consent_refused" and entry.detail["outcome"] == "refused"
    assert "Admin consent granted" not in page


def test_an_answer_counts_once_and_only_in_its_own_session(
    new_client: object, runtime: Runtime, unconsented: ConnectorConfig, sandbox_ssl_context: ssl.SSLContext
) -> None:
    assert callable(new_client)
    mine, other = new_client(), new_client()
    assert mine.login().status_code == 303 and other.login().status_code == 303
    location = answer_at_microsoft(start(mine), "accept", sandbox_ssl_context)
    # Another administrator's browser cannot use this answer (and without a started request, says so) …
    page = come_back(other, location)
    assert "No admin consent was started from this session" in page
    # … the right session can, once; a replay finds nothing to match.
    assert "Admin consent granted" in come_back(mine, location)
    assert "this answer was already used" in come_back(mine, location)
    outcomes = [(e.action, e.detail.get("outcome")) for e in consent_entries(runtime)]
    assert outcomes == [
        ("connector.consent_refused", "refused"),
        ("connector.consent", "granted"),
        ("connector.consent_refused", "refused"),
    ]


def test_an_answer_without_state_is_refused(signed_in: AdminClient, unconsented: ConnectorConfig) -> None:
    start(signed_in)
    page = come_back(signed_in, f"{CALLBACK}?admin_consent=True&tenant={unconsented.tenant_id}")
    assert "carried no state" in page


def test_consent_needs_a_saved_connector(signed_in: AdminClient) -> None:
    response = signed_in.post("/admin/connectors/smtp/consent")
    assert response.headers["location"] == "/admin/connectors/smtp#consent"
    assert "Save the connector first" in signed_in.follow(response).text


def test_consent_reported_but_not_in_the_token(
    signed_in: AdminClient,
    runtime: Runtime,
    unconsented: ConnectorConfig,
    admin: SandboxAdmin,
    sandbox_ssl_context: ssl.SSLContext,
) -> None:
    """The app asks only for the Delegated kind (here: nothing usable): Entra says granted, the token has no
    Mail.Send. The page must not claim success."""
    admin.patch_app(requested_permissions=["User.Read.All"])
    location = answer_at_microsoft(start(signed_in), "accept", sandbox_ssl_context)
    page = come_back(signed_in, location)
    assert "Consent reported, but Mail.Send is not in the token yet" in page
    assert "Mail.Send is not among them" in page
    assert "run Test connection again shortly" in page
    [entry] = consent_entries(runtime)
    assert entry.detail["mail_send"] is False and entry.detail["roles"] == ["User.Read.All"]


def test_a_granted_consent_wakes_a_paused_connector(
    signed_in: AdminClient, runtime: Runtime, unconsented: ConnectorConfig, sandbox_ssl_context: ssl.SSLContext
) -> None:
    later = runtime.clock.now().replace(year=runtime.clock.now().year + 1)
    runtime.connectors.pause(unconsented.id, ConsentMissingError("no roles in the token"), later)
    page = unescape(signed_in.get("/admin/connectors/smtp").text)
    assert "Not granted: no roles in the token" in page, "the checklist knows consent is what is missing"
    come_back(signed_in, answer_at_microsoft(start(signed_in), "accept", sandbox_ssl_context))
    assert runtime.connectors.get("default").next_probe_at == runtime.clock.now(), "probed at once"


def test_a_forged_callback_does_not_cancel_the_pending_consent(
    signed_in: AdminClient, unconsented: ConnectorConfig, sandbox_ssl_context: ssl.SSLContext
) -> None:
    """Issue 13 item 11: a link with the callback's parameters but not this session's state (someone else's
    page can make the admin's browser open it) is refused and leaves the real request waiting."""
    location = answer_at_microsoft(start(signed_in), "accept", sandbox_ssl_context)
    for forged in ("error=access_denied", "admin_consent=True&state=forged-state", "admin_consent=True"):
        assert "Microsoft's answer was not accepted" in come_back(signed_in, f"{CALLBACK}?{forged}")
    assert "Admin consent granted" in come_back(signed_in, location)
