"""Discovery, the token endpoint and its AADSTS errors, token claims — via MSAL and plain httpx."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msal
import pytest
import requests
from sandbox_support import (
    ASSERTION_TYPE,
    assertion,
    claims_of,
    make_certificate,
    token,
    token_request,
)

from m365relay.sandbox import SandboxServer


@pytest.fixture
def http_session(sandbox: SandboxServer) -> Iterator[requests.Session]:
    session = requests.Session()
    session.verify = str(sandbox.ca_file)
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override `verify` (PROTOCOL.md §11)
    yield session
    session.close()


def msal_app(server: SandboxServer, session: requests.Session, credential: Any, tenant: str | None = None) -> Any:
    info = server.demo_info
    return msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=credential,
        authority=f"{server.url}/{tenant or info['tenant_id']}",
        instance_discovery=False,
        http_client=session,
    )


def aadsts(response: httpx.Response, code: int, error: str, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    description = body["error_description"]
    assert description.startswith(f"AADSTS{code}: ")
    lines = description.split("\r\n")
    assert lines[1] == f"Trace ID: {body['trace_id']}"
    assert lines[2] == f"Correlation ID: {body['correlation_id']}"
    assert lines[3] == f"Timestamp: {body['timestamp']}"
    assert body["error_uri"] == f"https://login.microsoftonline.com/error?code={code}"
    return body


# -- discovery -------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["tenant_id", "tenant_domain"])
def test_discovery_document(sandbox: SandboxServer, sandbox_api: httpx.Client, alias: str) -> None:
    info = sandbox.demo_info
    response = sandbox_api.get(f"/{info[alias]}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    doc = response.json()
    tid = info["tenant_id"]
    assert doc["issuer"] == f"{sandbox.url}/{tid}/v2.0"
    assert doc["token_endpoint"] == f"{sandbox.url}/{tid}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"].startswith(f"{sandbox.url}/{tid}/")
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_post",
        "private_key_jwt",
        "client_secret_basic",
    }
    assert doc["cloud_instance_name"] == "microsoftonline.com"
    assert doc["msgraph_host"] == "graph.microsoft.com"
    assert doc["tenant_region_scope"]
    keys = sandbox_api.get(doc["jwks_uri"].removeprefix(sandbox.url)).json()["keys"]
    assert keys[0]["kty"] == "RSA" and keys[0]["kid"]


def test_discovery_unknown_and_malformed_tenant(sandbox_api: httpx.Client) -> None:
    unknown = sandbox_api.get(f"/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
    aadsts(unknown, 90002, "invalid_tenant", 400)
    assert "not found" in unknown.json()["error_description"]
    malformed = sandbox_api.get("/not_a!tenant/v2.0/.well-known/openid-configuration")
    aadsts(malformed, 900023, "invalid_tenant", 400)


def test_discovery_of_other_cloud_tenant(sandbox_api: httpx.Client) -> None:
    tid = str(uuid.uuid4())
    sandbox_api.post("/_sandbox/tenants", json={"id": tid, "domains": ["gov.onmicrosoft.us"], "cloud": "usgov-high"})
    doc = sandbox_api.get(f"/{tid}/v2.0/.well-known/openid-configuration").json()
    assert doc["cloud_instance_name"] == "microsoftonline.us"
    assert doc["msgraph_host"] == "graph.microsoft.us"
    assert doc["tenant_region_scope"] == "USGov"


# -- MSAL happy paths ------------------------------------------------------------------------------


def test_msal_secret(sandbox: SandboxServer, http_session: requests.Session) -> None:
    app = msal_app(sandbox, http_session, sandbox.demo_info["secret_value"])
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    assert result["expires_in"] > 300
    assert result["token_source"] == "identity_provider"
    again = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert again["token_source"] == "cache"
    claims = claims_of(result["access_token"])
    tid = sandbox.demo_info["tenant_id"]
    assert claims["aud"] == "https://graph.microsoft.com"  # the resource, not the address called
    assert claims["iss"] == f"https://sts.windows.net/{tid}/"
    assert claims["tid"] == tid
    assert claims["appid"] == sandbox.demo_info["client_id"]
    assert claims["appidacr"] == "1"
    assert claims["idtyp"] == "app"
    assert claims["ver"] == "1.0"
    assert claims["oid"] == claims["sub"]
    assert claims["roles"] == ["Mail.Send"]
    assert claims["iat"] == claims["nbf"]
    assert claims["exp"] - claims["iat"] == 3599 + 300


def test_msal_domain_authority(sandbox: SandboxServer, http_session: requests.Session) -> None:
    app = msal_app(sandbox, http_session, sandbox.demo_info["secret_value"], tenant="contoso.onmicrosoft.com")
    assert "access_token" in app.acquire_token_for_client(["https://graph.microsoft.com/.default"])


@pytest.mark.parametrize("form", ["public_certificate", "thumbprint"])
def test_msal_certificate(
    sandbox: SandboxServer, sandbox_api: httpx.Client, http_session: requests.Session, form: str
) -> None:
    cert = make_certificate()
    client_id = sandbox.demo_info["client_id"]
    added = sandbox_api.post(f"/_sandbox/apps/{client_id}/certificates", json={"pem": cert.cert_pem})
    assert added.status_code == 201
    credential: dict[str, str] = {"private_key": cert.key_pem}
    if form == "public_certificate":
        credential["public_certificate"] = cert.cert_pem  # PS256 + x5t#S256
    else:
        credential["thumbprint"] = added.json()["thumbprint_sha1"]  # RS256 + x5t
    result = msal_app(sandbox, http_session, credential).acquire_token_for_client(
        ["https://graph.microsoft.com/.default"]
    )
    assert "access_token" in result, result
    assert claims_of(result["access_token"])["appidacr"] == "2"


# -- the AADSTS table ------------------------------------------------------------------------------


def test_secret_id_pasted_as_secret(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    response = token_request(sandbox_api, sandbox, client_secret=sandbox.demo_info["secret_id"])
    body = aadsts(response, 7000215, "invalid_client", 401)
    assert "not the client secret ID" in body["error_description"]


def test_wrong_secret(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    aadsts(token_request(sandbox_api, sandbox, client_secret="abcQ~wrong"), 7000215, "invalid_client", 401)


def test_expired_secret(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    info = sandbox.demo_info
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    patched = sandbox_api.patch(
        f"/_sandbox/apps/{info['client_id']}/secrets/{info['secret_id']}", json={"expires_at": past}
    )
    assert patched.status_code == 200
    aadsts(token_request(sandbox_api, sandbox), 7000222, "invalid_client", 401)


def test_secret_expires_with_the_clock(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    sandbox_api.put("/_sandbox/clock", json={"offset_seconds": 800 * 86400})
    aadsts(token_request(sandbox_api, sandbox), 7000222, "invalid_client", 401)


def test_unknown_app(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    aadsts(token_request(sandbox_api, sandbox, client_id=str(uuid.uuid4())), 700016, "unauthorized_client", 400)


def test_unknown_and_malformed_tenant(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    aadsts(token_request(sandbox_api, sandbox, tenant=str(uuid.uuid4())), 90002, "invalid_request", 400)
    aadsts(token_request(sandbox_api, sandbox, tenant="bad_tenant!"), 900023, "invalid_request", 400)


@pytest.mark.parametrize("alias", ["common", "organizations"])
def test_multi_tenant_alias_rejected(sandbox: SandboxServer, sandbox_api: httpx.Client, alias: str) -> None:
    response = token_request(sandbox_api, sandbox, tenant=alias)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_invalid_scope(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    aadsts(token_request(sandbox_api, sandbox, scope="no-such-resource/.default"), 70011, "invalid_scope", 400)


@pytest.mark.parametrize("resource", ["https://unknown.example.com", "SANDBOX"])
def test_scope_of_an_unknown_resource(sandbox: SandboxServer, sandbox_api: httpx.Client, resource: str) -> None:
    """A scope built from a proxy's URL, or from the URL the sandbox listens on, names no resource principal:
    AADSTS500011, as Entra answers (PROTOCOL.md §14). Only the real Graph resource gets a token."""
    resource = sandbox.url if resource == "SANDBOX" else resource
    response = token_request(sandbox_api, sandbox, scope=f"{resource}/.default")
    aadsts(response, 500011, "invalid_resource", 400)
    assert f"The resource principal named {resource.lower()} was not found" in response.json()["error_description"]


def test_scope_without_default(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    response = token_request(sandbox_api, sandbox, scope="https://graph.microsoft.com/Mail.Send")
    aadsts(response, 1002012, "invalid_scope", 400)


@pytest.mark.parametrize("missing", ["grant_type", "scope", "client_id"])
def test_missing_parameter(sandbox: SandboxServer, sandbox_api: httpx.Client, missing: str) -> None:
    body = aadsts(token_request(sandbox_api, sandbox, **{missing: None}), 900144, "invalid_request", 400)
    assert f"'{missing}'" in body["error_description"]


def test_no_credential(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    aadsts(token_request(sandbox_api, sandbox, client_secret=None), 7000218, "invalid_client", 401)


def test_disabled_app(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    sandbox_api.patch(f"/_sandbox/apps/{sandbox.demo_info['client_id']}", json={"enabled": False})
    aadsts(token_request(sandbox_api, sandbox), 7000112, "unauthorized_client", 400)


def test_cross_cloud(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    tid, client_id = str(uuid.uuid4()), str(uuid.uuid4())
    sandbox_api.post("/_sandbox/tenants", json={"id": tid, "domains": ["cn.partner.example"], "cloud": "china"})
    created = sandbox_api.post(
        "/_sandbox/apps",
        json={
            "tenant": tid,
            "client_id": client_id,
            "secrets": [{"secret_id": str(uuid.uuid4()), "value": "abcQ~1", "expires_at": "2099-01-01T00:00:00Z"}],
        },
    )
    assert created.status_code == 201, created.text
    response = token_request(sandbox_api, sandbox, tenant=tid, client_id=client_id, client_secret="abcQ~1")
    body = aadsts(response, 900382, "invalid_request", 400)
    assert "Cross Cloud" in body["error_description"]


def test_basic_auth_and_correlation_id(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    info = sandbox.demo_info
    basic = base64.b64encode(f"{info['client_id']}:{info['secret_value']}".encode()).decode()
    correlation = str(uuid.uuid4())
    response = sandbox_api.post(
        f"/{info['tenant_id']}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"},
        headers={"Authorization": f"Basic {basic}", "client-request-id": correlation},
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store, no-cache"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3599
    assert "refresh_token" not in body
    bad = token_request(sandbox_api, sandbox, client_secret="nope", client_id=info["client_id"])
    assert bad.headers["cache-control"] == "no-store, no-cache"


def test_roles_absent_without_consent(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    sandbox_api.patch(f"/_sandbox/apps/{sandbox.demo_info['client_id']}", json={"granted_roles": []})
    claims = claims_of(token(sandbox_api, sandbox))
    assert "roles" not in claims
    assert "scp" not in claims


def test_other_resources(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    assert claims_of(token(sandbox_api, sandbox, scope="https://graph.microsoft.com/.default"))["aud"] == (
        "https://graph.microsoft.com"
    )
    outlook = token(sandbox_api, sandbox, scope="https://outlook.office365.com/.default")
    assert claims_of(outlook)["aud"] == "https://outlook.office365.com"


# -- hand-made certificate assertions ---------------------------------------------------------------


@pytest.fixture
def registered_cert(sandbox: SandboxServer, sandbox_api: httpx.Client) -> Any:
    cert = make_certificate()
    response = sandbox_api.post(
        f"/_sandbox/apps/{sandbox.demo_info['client_id']}/certificates", json={"pem": cert.cert_pem}
    )
    assert response.status_code == 201
    return cert


def assertion_request(api: httpx.Client, server: SandboxServer, signed: str) -> httpx.Response:
    return token_request(api, server, client_secret=None, client_assertion_type=ASSERTION_TYPE, client_assertion=signed)


def endpoint(server: SandboxServer, alias: str | None = None) -> str:
    return f"{server.url}/{alias or server.demo_info['tenant_id']}/oauth2/v2.0/token"


@pytest.mark.parametrize(("form", "padded"), [("x5t#S256", False), ("x5t#S256", True), ("x5t", False), ("x5t", True)])
def test_assertion_header_forms(
    sandbox: SandboxServer, sandbox_api: httpx.Client, registered_cert: Any, form: str, padded: bool
) -> None:
    signed = assertion(
        registered_cert, sandbox.demo_info["client_id"], endpoint(sandbox), header_form=form, padded=padded
    )
    response = assertion_request(sandbox_api, sandbox, signed)
    assert response.status_code == 200, response.text


def test_assertion_audience_may_name_the_domain(
    sandbox: SandboxServer, sandbox_api: httpx.Client, registered_cert: Any
) -> None:
    signed = assertion(
        registered_cert, sandbox.demo_info["client_id"], endpoint(sandbox, "contoso.onmicrosoft.com"), nbf=None
    )
    assert assertion_request(sandbox_api, sandbox, signed).status_code == 200


def test_assertion_certificate_not_registered(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    signed = assertion(make_certificate(), sandbox.demo_info["client_id"], endpoint(sandbox))
    aadsts(assertion_request(sandbox_api, sandbox, signed), 700027, "invalid_client", 401)


def test_assertion_bad_signature(sandbox: SandboxServer, sandbox_api: httpx.Client, registered_cert: Any) -> None:
    other = make_certificate()
    forged = type(registered_cert)(other.key, registered_cert.cert)  # right thumbprint, wrong key
    signed = assertion(forged, sandbox.demo_info["client_id"], endpoint(sandbox))
    aadsts(assertion_request(sandbox_api, sandbox, signed), 700027, "invalid_client", 401)


def test_assertion_out_of_window(sandbox: SandboxServer, sandbox_api: httpx.Client, registered_cert: Any) -> None:
    import time

    client_id = sandbox.demo_info["client_id"]
    expired = assertion(registered_cert, client_id, endpoint(sandbox), now=time.time() - 7200)
    aadsts(assertion_request(sandbox_api, sandbox, expired), 700024, "invalid_client", 400)
    future = assertion(registered_cert, client_id, endpoint(sandbox), nbf=time.time() + 3600, exp=time.time() + 7200)
    aadsts(assertion_request(sandbox_api, sandbox, future), 700024, "invalid_client", 400)


def test_assertion_wrong_audience_and_issuer(
    sandbox: SandboxServer, sandbox_api: httpx.Client, registered_cert: Any
) -> None:
    client_id = sandbox.demo_info["client_id"]
    wrong_aud = assertion(registered_cert, client_id, "https://login.microsoftonline.com/x/oauth2/v2.0/token")
    assert assertion_request(sandbox_api, sandbox, wrong_aud).status_code == 401
    wrong_iss = assertion(registered_cert, client_id, endpoint(sandbox), iss=str(uuid.uuid4()))
    assert assertion_request(sandbox_api, sandbox, wrong_iss).status_code == 401


def test_assertion_malformed(sandbox: SandboxServer, sandbox_api: httpx.Client) -> None:
    response = assertion_request(sandbox_api, sandbox, "not-a-jwt")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
