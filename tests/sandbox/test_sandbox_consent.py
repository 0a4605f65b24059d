"""The v2.0 admin-consent page: Accept records the grant and redirects with state; Cancel and bad redirects."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sandbox_support import claims_of, token

from m365relay.sandbox import SandboxServer

REDIRECT = "http://127.0.0.1:8080/admin/connectors/SMTP.aspx"


@pytest.fixture
def consent_params(sandbox: SandboxServer, sandbox_api: httpx.Client) -> dict[str, str]:
    client_id = sandbox.demo_info["client_id"]
    sandbox_api.patch(f"/_sandbox/apps/{client_id}", json={"redirect_uris": [REDIRECT], "granted_roles": []})
    return {
        "client_id": client_id,
        "scope": "https://graph.microsoft.com/.default",
        "redirect_uri": REDIRECT,
        "state": "st<ate>&1",
    }


def consent_path(server: SandboxServer) -> str:
    return f"/{server.demo_info['tenant_id']}/v2.0/adminconsent"


def redirect_query(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def test_accept(sandbox: SandboxServer, sandbox_api: httpx.Client, consent_params: dict[str, str]) -> None:
    assert "roles" not in claims_of(token(sandbox_api, sandbox))
    page = sandbox_api.get(consent_path(sandbox), params=consent_params)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "Mail.Send" in page.text and "Accept" in page.text
    assert "st&lt;ate&gt;&amp;1" in page.text  # echoed safely
    response = sandbox_api.post(consent_path(sandbox), data={**consent_params, "action": "accept"})
    query = redirect_query(response)
    assert query == {
        "admin_consent": "True",
        "tenant": sandbox.demo_info["tenant_id"],
        "scope": consent_params["scope"],
        "state": consent_params["state"],
    }
    assert claims_of(token(sandbox_api, sandbox))["roles"] == ["Mail.Send"]


def test_cancel(sandbox: SandboxServer, sandbox_api: httpx.Client, consent_params: dict[str, str]) -> None:
    response = sandbox_api.post(consent_path(sandbox), data={**consent_params, "action": "cancel"})
    query = redirect_query(response)
    assert query["error"] == "consent_required"
    assert query["error_description"].startswith("AADSTS65004")
    assert query["state"] == consent_params["state"]
    assert "roles" not in claims_of(token(sandbox_api, sandbox))


def test_unregistered_redirect_uri_never_redirects(
    sandbox: SandboxServer, sandbox_api: httpx.Client, consent_params: dict[str, str]
) -> None:
    evil = {**consent_params, "redirect_uri": "https://evil.example/steal"}
    page = sandbox_api.get(consent_path(sandbox), params=evil)
    assert page.status_code == 400
    assert "location" not in page.headers
    assert "AADSTS50011" in page.text
    post = sandbox_api.post(consent_path(sandbox), data={**evil, "action": "accept"})
    assert post.status_code == 400 and "location" not in post.headers


def test_unknown_app_and_common(
    sandbox: SandboxServer, sandbox_api: httpx.Client, consent_params: dict[str, str]
) -> None:
    unknown = sandbox_api.get(
        consent_path(sandbox), params={**consent_params, "client_id": "00000000-0000-0000-0000-000000000001"}
    )
    assert unknown.status_code == 400 and "AADSTS700016" in unknown.text
    common = sandbox_api.get("/common/v2.0/adminconsent", params=consent_params)
    assert common.status_code == 400
    organizations = sandbox_api.get("/organizations/v2.0/adminconsent", params=consent_params)
    assert organizations.status_code == 200
