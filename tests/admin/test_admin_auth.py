"""Sign-in, sessions, sign-out, idle timeout and the sign-in lockout, over a real socket (httpx → uvicorn).

Time moves on a ManualClock; nothing sleeps."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from admin_support import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    AdminClient,
    LiveServer,
    admin_routes,
    create_admin,
    free_port,
    hidden,
)
from sqlalchemy import select

from m365relay.clock import ManualClock
from m365relay.db.models import AdminSessionRow, AuditRow
from m365relay.runtime import Runtime
from m365relay.web.admin.context import safe_next
from support import make_settings


def test_every_admin_route_sends_a_stranger_to_sign_in(client: AdminClient, runtime: Runtime) -> None:
    routes = admin_routes(runtime)
    paths = {path for _m, path in routes}
    # The enumeration itself must see the pages (a broken enumeration would make this test pass vacuously).
    for expected in (
        "/admin/",
        "/admin/connectors/smtp",
        "/admin/connectors/SMTP.aspx",
        "/admin/outbox",
        "/admin/outbox/1",
        "/admin/audit",
        "/admin/logout",
        "/admin/connectors/smtp/consent",
    ):
        assert expected in paths, f"{expected} is not among the admin routes"
    public = {("GET", "/admin/login"), ("POST", "/admin/login")}
    for method, path in routes:
        if (method, path) in public:
            continue
        response = client.http.request(method, path, data={"csrf_token": "x"} if method == "POST" else None)
        assert response.status_code == 303, f"{method} {path} answered {response.status_code} without a session"
        location = urlsplit(response.headers["location"])
        assert location.path == "/admin/login", f"{method} {path} → {response.headers['location']}"
        if method == "GET":
            assert parse_qs(location.query)["next"] == [path]
    # A path no route names is refused the same way (the catch-all), and so is the consent callback.
    for path in ("/admin/no-such-page", "/admin/connectors/SMTP.aspx?admin_consent=True&state=abc"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/admin/login?next=")


def test_static_files_and_the_sign_in_page_need_no_session(client: AdminClient) -> None:
    for path in ("/admin/static/admin.css", "/admin/static/admin.js", "/admin/login"):
        assert client.get(path).status_code == 200, path


def test_sign_in_sets_a_server_side_session_cookie(client: AdminClient, runtime: Runtime) -> None:
    response = client.login(next_path="/admin/outbox")
    assert response.status_code == 303 and response.headers["location"] == "/admin/outbox"
    cookie_header = next(h for h in response.headers.get_list("set-cookie") if h.startswith("m365relay_admin="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie_header.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attributes and "secure" not in attributes  # served over http here
    assert "path=/admin" in cookie_header.lower() and "samesite=lax" in cookie_header.lower()
    value = client.http.cookies["m365relay_admin"]
    with runtime.db.read() as session:
        ids = list(session.scalars(select(AdminSessionRow.id)))
        assert ids == [hashlib.sha256(value.encode()).hexdigest()], "only the cookie's SHA-256 is stored"
        audit = session.scalars(select(AuditRow).where(AuditRow.action == "admin.login")).one()
    assert audit.actor == f"web:{ADMIN_USER}" and audit.remote_addr == "127.0.0.1"
    page = client.get("/admin/outbox")
    assert page.status_code == 200 and f"Signed in as <strong>{ADMIN_USER}</strong>" in page.text


def test_the_cookie_is_secure_when_the_public_address_is_https(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", http_port=free_port(), public_base_url="https://relay.example.com")
    runtime = Runtime(settings)
    create_admin(runtime)
    server = LiveServer(runtime).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            page = http.get("/admin/login")
            login_cookie = page.headers["set-cookie"]
            assert login_cookie.startswith("m365relay_login=") and "secure" in login_cookie.lower()
            # httpx, like a browser, keeps Secure cookies off plain http: hand it back as the TLS proxy would.
            token = hidden(page.text, "login_token")
            response = http.post(
                "/admin/login",
                data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "login_token": token},
                headers={"Cookie": f"m365relay_login={token}"},
            )
        assert response.status_code == 303
        cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("m365relay_admin="))
        assert "secure" in cookie.lower() and "httponly" in cookie.lower()
    finally:
        server.stop()
        runtime.close()


def test_a_wrong_password_is_refused_and_audited_without_the_password(client: AdminClient, runtime: Runtime) -> None:
    response = client.login(password="not the right password")
    assert response.status_code == 401
    assert "The username or password is not correct." in response.text
    assert "m365relay_admin" not in client.http.cookies
    assert "not the right password" not in response.text
    # A password typed into the username field by mistake must not reach the audit log.
    client.login(username="hunter2-typed-as-name", password="x" * 12)
    with runtime.db.read() as session:
        failed = list(session.scalars(select(AuditRow).where(AuditRow.action == "admin.login_failed")))
    assert [f.target for f in failed] == [ADMIN_USER, "(no such administrator)"]
    assert all(f.remote_addr == "127.0.0.1" for f in failed)
    assert "hunter2" not in repr([(f.target, f.detail) for f in failed])


def test_sign_in_is_locked_after_too_many_failures_per_address(
    client: AdminClient, runtime: Runtime, clock: ManualClock
) -> None:
    attempts = runtime.settings.admin_login_attempts
    for _ in range(attempts):
        assert client.login(password="wrong password!").status_code == 401
    locked = client.login()  # even the right password is not checked now
    assert locked.status_code == 429
    assert f"Too many failed sign-ins from your address ({attempts} in the last 15 minutes)" in locked.text
    assert "m365relay_admin" not in client.http.cookies
    clock.advance(15 * 60 + 1)
    assert client.login().status_code == 303, "the window has passed"


def test_a_successful_sign_in_clears_the_count(client: AdminClient, runtime: Runtime, clock: ManualClock) -> None:
    attempts = runtime.settings.admin_login_attempts
    for _ in range(attempts - 1):
        assert client.login(password="wrong password!").status_code == 401
    clock.advance(1)
    assert client.login().status_code == 303
    client.http.cookies.clear()
    clock.advance(1)
    for _ in range(attempts - 1):
        assert client.login(password="wrong password!").status_code == 401
    assert client.login().status_code == 303, "earlier failures no longer count after a success"


def test_idle_sessions_end(signed_in: AdminClient, runtime: Runtime, clock: ManualClock) -> None:
    idle = runtime.settings.admin_session_idle_minutes
    for _ in range(3):  # activity keeps the session alive well past one idle period
        clock.advance((idle - 1) * 60)
        assert signed_in.get("/admin/audit").status_code == 200
    clock.advance(idle * 60 + 1)
    response = signed_in.get("/admin/outbox?status=queued")
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert parse_qs(location.query) == {"next": ["/admin/outbox?status=queued"], "expired": ["1"]}
    page = signed_in.follow(response)
    assert f"after {idle} minutes without activity" in page.text
    with runtime.db.read() as session:
        assert session.scalars(select(AdminSessionRow)).all() == [], "the ended session is deleted"


def test_sign_out(signed_in: AdminClient, runtime: Runtime) -> None:
    refused = signed_in.http.post("/admin/logout", data={})
    assert refused.status_code == 403, "sign-out is a form too: no CSRF token, no sign-out"
    response = signed_in.post("/admin/logout")
    assert response.status_code == 303 and response.headers["location"] == "/admin/login?signed_out=1"
    assert "You have signed out." in signed_in.follow(response).text
    assert signed_in.get("/admin/").status_code == 303
    with runtime.db.read() as session:
        assert session.scalars(select(AdminSessionRow)).all() == []
        assert session.scalars(select(AuditRow.action).where(AuditRow.action == "admin.logout")).one()


def test_sign_in_form_needs_its_own_token(client: AdminClient) -> None:
    response = client.http.post(
        "/admin/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "login_token": "forged"}
    )
    assert response.status_code == 403 and "security token did not match" in response.text
    assert "m365relay_admin" not in client.http.cookies


def test_a_signed_in_visit_to_the_sign_in_page_goes_on(signed_in: AdminClient) -> None:
    response = signed_in.get("/admin/login?next=/admin/audit")
    assert response.status_code == 303 and response.headers["location"] == "/admin/audit"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/admin/outbox?status=failed", "/admin/outbox?status=failed"),
        (
            "/admin/connectors/SMTP.aspx?admin_consent=True&state=x",
            "/admin/connectors/SMTP.aspx?admin_consent=True&state=x",
        ),
        ("", "/admin/"),
        ("https://evil.example/admin/", "/admin/"),
        ("//evil.example/admin/", "/admin/"),
        ("/\\evil.example", "/admin/"),
        ("/api/v1/messages", "/admin/"),
        ("/admin/login?next=/admin/", "/admin/"),
        ("/admin/static/admin.css", "/admin/"),
        ("/admin/\nSet-Cookie: x", "/admin/"),
        ("javascript:alert(1)", "/admin/"),
    ],
)
def test_only_admin_paths_of_this_site_are_followed_after_sign_in(given: str, expected: str) -> None:
    assert safe_next(given) == expected


def test_sessions_are_per_browser(new_client: Callable[[], AdminClient]) -> None:
    first, second = new_client(), new_client()
    assert first.login().status_code == 303 and second.login().status_code == 303
    assert first.http.cookies["m365relay_admin"] != second.http.cookies["m365relay_admin"]
    assert first.csrf() != second.csrf(), "each session has its own CSRF token"
    assert first.post("/admin/logout").status_code == 303
    assert second.get("/admin/").status_code == 200, "signing out ends only that session"
