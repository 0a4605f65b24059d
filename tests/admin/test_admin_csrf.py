"""Every form of the admin UI carries the session's CSRF token; a forged, missing or foreign one is refused
with a page that says so, and nothing changes."""

from __future__ import annotations

from collections.abc import Callable
from html import unescape

from admin_support import AdminClient, admin_routes
from sqlalchemy import func, select

from m365relay.connectors import ConnectorConfig
from m365relay.db.models import AuditRow
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update


def audit_count(runtime: Runtime) -> int:
    with runtime.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(AuditRow)) or 0)


def test_every_form_refuses_a_forged_or_missing_token(
    signed_in: AdminClient, runtime: Runtime, connector: ConnectorConfig
) -> None:
    message_id = runtime.outbox.list()[0].id if runtime.outbox.list() else 1
    posts = [path.replace("/1/", f"/{message_id}/") for method, path in admin_routes(runtime) if method == "POST"]
    assert "/admin/connectors/smtp" in posts and "/admin/logout" in posts
    before = audit_count(runtime)
    for path in posts:
        if path == "/admin/login":
            continue  # no session yet: its own double-submit token (test_auth)
        for data in ({"csrf_token": "forged-token"}, {}, {"csrf_token": ""}):
            response = signed_in.http.post(path, data={**data, "client_id": "00000000-0000-0000-0000-000000000000"})
            assert response.status_code == 403, f"POST {path} with {data} answered {response.status_code}"
            assert "the form's security token did not match" in unescape(response.text)
            assert "nothing was changed" in response.text
    assert runtime.connectors.get("default") == connector, "the connector is unchanged"
    assert audit_count(runtime) == before, "no action was recorded"
    assert signed_in.get("/admin/").status_code == 200, "the session itself is still valid"


def test_a_token_from_another_session_is_refused(
    new_client: Callable[[], AdminClient], runtime: Runtime, sandbox: SandboxServer
) -> None:
    mine, theirs = new_client(), new_client()
    assert mine.login().status_code == 303 and theirs.login().status_code == 303
    stolen = theirs.csrf()
    update = connector_update(sandbox)
    form = {"client_id": update.client_id or "", "tenant_id": update.tenant_id or "", "user_name": "x@contoso.com"}
    response = mine.post("/admin/connectors/smtp", form, csrf=stolen)
    assert response.status_code == 403
    assert runtime.connectors.find("default") is None
    assert mine.post("/admin/connectors/smtp", form).status_code == 303, "its own token works"
