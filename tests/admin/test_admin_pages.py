"""Every admin page: the expiry banner, the overview, the audit log, security headers, not-found pages — and a
secret saved through the form shows up nowhere afterwards, in no page and no audit entry."""

from __future__ import annotations

import re
from datetime import date, timedelta
from importlib import resources

from admin_support import AdminClient, admin_routes, text
from sqlalchemy import select

from m365relay import Relay
from m365relay.clock import ManualClock
from m365relay.connectors import ConnectorConfig
from m365relay.db.models import AdminSessionRow, AuditRow
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from m365relay.web.admin.headers import CSP
from support import SandboxAdmin, connector_update

PAGES = ("/admin/", "/admin/connectors/smtp", "/admin/outbox", "/admin/audit")


def relogin(client: AdminClient) -> AdminClient:
    client.http.cookies.clear()
    assert client.login().status_code == 303
    return client


def banner(page: str) -> tuple[str, str] | None:
    found = re.search(r'<div class="wrap banner banner-(\w+)" role="alert">(.*?)</div>', page, re.S)
    return (found.group(1), text(found.group(2))) if found else None


def test_the_expiry_banner_turns_amber_then_red(
    client: AdminClient, runtime: Runtime, sandbox: SandboxServer, clock: ManualClock
) -> None:
    expires = clock.now().date() + timedelta(days=40)
    runtime.connectors.save("default", connector_update(sandbox, secret_expires=expires))
    relogin(client)
    assert all(banner(client.get(p).text) is None for p in PAGES), "40 days left: no banner"
    clock.advance(11 * 86400)  # 29 days left
    relogin(client)
    for path in PAGES:
        found = banner(client.get(path).text)
        assert found is not None and found[0] == "warning", path
        assert f"expires on {expires.isoformat()} (29 days)" in found[1]
        assert "Create a new client secret in the Azure portal" in found[1]
    clock.advance(23 * 86400)  # 6 days left
    relogin(client)
    level, words = banner(client.get("/admin/outbox").text) or ("", "")
    assert level == "critical" and "Action needed now" in words and "(6 days)" in words
    clock.advance(7 * 86400)  # expired
    relogin(client)
    level, words = banner(client.get("/admin/audit").text) or ("", "")
    assert level == "critical" and f"expired on {expires.isoformat()}" in words
    assert "mail cannot be sent until a new one is stored" in words


def test_the_overview(signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig) -> None:
    Relay(runtime=runtime).enqueue(to=["a@contoso.com"], subject="x", text="y")
    page = text(signed_in.get("/admin/").text)
    assert connector.user_name in page and "Active" in page
    assert "1 waiting, 0 failed" in page and "queued: 1" in page


def test_the_overview_without_a_connector_points_at_the_setup(signed_in: AdminClient) -> None:
    assert "Set up the eMail (SMTP) connector" in text(signed_in.get("/admin/").text)


def test_the_audit_log_shows_who_changed_what_and_sign_ins(
    client: AdminClient, runtime: Runtime, sandbox: SandboxServer
) -> None:
    assert client.login(password="wrong password!").status_code == 401
    assert client.login().status_code == 303
    form = {"client_id": "4e7a1d93-c2b8-4f60-9a15-8d3c6e2b0f71", "tenant_id": "contoso.onmicrosoft.com"}
    form |= {"user_name": "noreply@contoso.com", "cloud": "global"}
    assert client.post("/admin/connectors/smtp", form).status_code == 303
    rows = text(client.get("/admin/audit").text)
    assert "web:alice Connector settings changed default changed: OAuth Client ID, Cloud, Tenant ID, User Name" in rows
    assert "web:alice Signed in alice 127.0.0.1" in rows
    assert "anonymous Failed sign-in alice 127.0.0.1" in rows
    only = text(client.get("/admin/audit?kind=signin").text)
    assert "Signed in" in only and "Connector settings changed" not in only
    assert client.get("/admin/audit?kind=bogus").status_code == 400


def test_the_audit_log_pages(signed_in: AdminClient, runtime: Runtime) -> None:
    from m365relay.web.admin.audit_log import record

    for i in range(60):
        record(runtime, "cli", "connector.save", f"c{i}", {"changed": ["cloud"]}, None)
    first = signed_in.get("/admin/audit").text
    assert "c59" in first and "c9<" not in first
    older = re.search(r'href="/admin/audit\?kind=&amp;before=(\d+)" rel="next"', first)
    assert older
    second = signed_in.get(f"/admin/audit?before={older.group(1)}").text
    assert "c9<" in second and "c59" not in second


def test_a_saved_secret_appears_nowhere(
    signed_in: AdminClient, runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin
) -> None:
    secret = admin.demo["secret_value"]
    form = {
        "client_id": admin.demo["client_id"],
        "tenant_id": admin.demo["tenant_id"],
        "user_name": admin.demo["mailbox"],
        "secret": secret,
        "secret_expires": (date.today() + timedelta(days=100)).isoformat(),
        "cloud": "custom",
        "login_url": sandbox.url,
        "graph_url": sandbox.url,
        "ca_file": str(sandbox.ca_file),
    }
    assert signed_in.post("/admin/connectors/smtp", form).status_code == 303
    # Everything else an administrator does with it afterwards:
    assert signed_in.post("/admin/connectors/smtp", form | {"user_name": "bad"}).status_code == 422
    signed_in.post("/admin/connectors/smtp/test", {"send_test_to": "me@contoso.com"})
    signed_in.post("/admin/connectors/smtp/send-test", {"to": "me@contoso.com"})
    message_id = Relay(runtime=runtime).enqueue(to=["a@contoso.com"], subject="s", text="t")
    seen = []
    for method, path in admin_routes(runtime):
        if method == "GET":
            seen.append(signed_in.get(path.replace("/1", f"/{message_id}")).text)
    seen.append(signed_in.post("/admin/connectors/smtp", form | {"client_id": "x"}).text)
    assert seen and all(secret not in page for page in seen)
    with runtime.db.read() as session:
        audit = [(r.actor, r.action, r.target, r.detail) for r in session.scalars(select(AuditRow))]
        sessions = [r.data for r in session.scalars(select(AdminSessionRow))]
    assert len(audit) >= 4 and secret not in repr(audit) and secret not in repr(sessions)


def test_security_headers_on_admin_responses(client: AdminClient) -> None:
    for path in ("/admin/login", "/admin/", "/admin/static/admin.css"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get("/admin/login").headers["cache-control"] == "no-store"
    assert "content-security-policy" not in client.get("/healthz").headers, "only the admin UI's responses"


def test_unknown_admin_pages_are_a_404_page(signed_in: AdminClient) -> None:
    response = signed_in.get("/admin/no/such/page")
    assert response.status_code == 404 and "Page not found" in response.text
    assert signed_in.get("/admin").headers["location"] == "/admin/"


def test_templates_and_static_files_ship_with_the_package() -> None:
    root = resources.files("m365relay")
    for name in ("base.html", "connector.html", "login.html", "outbox.html", "message.html", "audit.html"):
        assert (root / "web" / "templates" / "admin" / name).is_file(), name
    for name in ("admin.css", "admin.js"):
        assert (root / "web" / "static" / name).is_file(), name
