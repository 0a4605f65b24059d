"""National clouds end to end: a connector set to a national cloud talks only to that cloud's sign-in and
Graph hosts with that cloud's scope (in-process transports, no network), its consent link points there,
and a tenant that lives in another cloud than configured gets an explanation in words."""

from __future__ import annotations

import asyncio
import json
import uuid
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from doctor_support import WRONG_SECRET, checks, cli

from m365relay.auth import TokenProvider
from m365relay.connectors import ConnectorConfig, ConnectorUpdate
from m365relay.doctor.tenant import Discovery, cross_cloud_result
from m365relay.graph import GraphSender
from m365relay.lifecycle import admin_consent_url
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SECRET_EXPIRES, SandboxAdmin, connector_update

TENANT = "7c1b2a3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
CLIENT = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
EXPECTED = {
    "global": ("login.microsoftonline.com", "graph.microsoft.com"),
    "usgov-high": ("login.microsoftonline.us", "graph.microsoft.us"),
    "usgov-dod": ("login.microsoftonline.us", "dod-graph.microsoft.us"),
    "china": ("login.partner.microsoftonline.cn", "microsoftgraph.chinacloudapi.cn"),
}


def national(runtime: Runtime, cloud: str) -> ConnectorConfig:
    return runtime.connectors.save(
        cloud,
        ConnectorUpdate(
            client_id=CLIENT,
            tenant_id=TENANT,
            user_name="noreply@fabrikam.us",
            cloud=cloud,
            secret=WRONG_SECRET,
            secret_expires=SECRET_EXPIRES,
        ),
    )


def test_usgov_high_authority_scope_and_consent_url(runtime: Runtime) -> None:
    connector = national(runtime, "usgov-high")
    cloud = connector.cloud
    assert cloud.authority(TENANT) == f"https://login.microsoftonline.us/{TENANT}"
    assert cloud.token_url(TENANT) == f"https://login.microsoftonline.us/{TENANT}/oauth2/v2.0/token"
    assert (
        cloud.discovery_url(TENANT)
        == f"https://login.microsoftonline.us/{TENANT}/v2.0/.well-known/openid-configuration"
    )
    assert cloud.scope == "https://graph.microsoft.us/.default"
    url = admin_consent_url(connector, "https://relay.fabrikam.us/admin/connectors/SMTP.aspx", "s1")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "login.microsoftonline.us")
    assert parts.path == f"/{TENANT}/v2.0/adminconsent"
    assert parse_qs(parts.query) == {
        "client_id": [CLIENT],
        "scope": ["https://graph.microsoft.us/.default"],
        "redirect_uri": ["https://relay.fabrikam.us/admin/connectors/SMTP.aspx"],
        "state": ["s1"],
    }


class FakeCloud:
    """Microsoft's sign-in and Graph hosts of every cloud, in process: records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        host, path = request.url.host, request.url.path
        if path.endswith("/.well-known/openid-configuration"):
            base = f"https://{host}/{TENANT}"
            return httpx.Response(
                200,
                json={
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                },
            )
        if path.endswith("/oauth2/v2.0/token"):
            form = parse_qs(request.content.decode())
            audience = form["scope"][0].removesuffix("/.default")
            token = jwt.encode({"aud": audience, "roles": ["Mail.Send"]}, "k" * 32, algorithm="HS256")
            return httpx.Response(200, json={"token_type": "Bearer", "expires_in": 3599, "access_token": token})
        if path.endswith("/sendMail"):
            return httpx.Response(202, headers={"request-id": str(uuid.uuid4())})
        return httpx.Response(404)


@pytest.mark.parametrize("cloud", list(EXPECTED))
def test_tokens_and_graph_calls_use_only_the_clouds_hosts_and_scope(runtime: Runtime, cloud: str) -> None:
    connector = national(runtime, cloud)
    fake = FakeCloud()
    transport = httpx.MockTransport(fake)
    tokens = TokenProvider(transport=transport)
    sender = GraphSender(tokens, transport=transport)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = connector.user_name, "a@fabrikam.us", "national"
    message.set_content("x")

    async def go() -> None:
        try:
            await sender.send(connector, message)
        finally:
            await sender.aclose()
            tokens.close()

    asyncio.run(go())
    login, graph = EXPECTED[cloud]
    hosts = {r.url.host for r in fake.requests}
    assert hosts == {login, graph}, hosts
    token_request = next(r for r in fake.requests if r.url.path.endswith("/token"))
    assert str(token_request.url) == f"https://{login}/{TENANT}/oauth2/v2.0/token"
    assert parse_qs(token_request.content.decode())["scope"] == [f"https://{graph}/.default"]
    send = fake.requests[-1]
    assert str(send.url) == f"https://{graph}/v1.0/users/noreply%40fabrikam.us/sendMail"
    claims = jwt.decode(send.headers["Authorization"].removeprefix("Bearer "), options={"verify_signature": False})
    assert claims["aud"] == f"https://{graph}"


# -- a tenant of another cloud than configured (the sandbox emulates it) --------------------------------


@pytest.mark.parametrize(
    ("tenant_cloud", "title"), [("usgov-high", "US Government L4 (GCC High)"), ("usgov-dod", "US Government L5 (DoD)")]
)
def test_tenant_in_another_cloud_is_explained_in_words(
    runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin, tenant_cloud: str, title: str
) -> None:
    tenant = str(uuid.uuid4())
    admin.add_tenant(tenant, ["fabrikam.onmicrosoft.us"], cloud=tenant_cloud)
    app = admin.add_app(tenant=tenant, granted_roles=["Mail.Send"], secrets=[{"value": WRONG_SECRET}])
    connector = runtime.connectors.save(
        "default",
        connector_update(
            sandbox,
            tenant_id=tenant,
            client_id=app["client_id"],
            user_name="noreply@fabrikam.onmicrosoft.us",
            secret=WRONG_SECRET,
        ),
    )
    results = checks(runtime, connector)
    found = results["tenant"]
    assert found.status == "fail"
    assert f"belongs to the {title} cloud ({tenant_cloud})" in found.detail
    assert "Global (incl. GCC)" in found.detail and "tokens do not cross clouds" in found.detail
    assert "AADSTS" not in found.detail, "words, not a bare code"
    assert f"--cloud {tenant_cloud}" in found.remedy and "portal.azure.us" in found.remedy
    assert found.data["suggested_cloud"] == tenant_cloud
    assert all(results[k].status == "skip" for k in ("app", "credential", "permission", "mailbox"))
    assert admin.stats()["token"] == 0, "explained from discovery, before any token request"
    run = cli(runtime, "doctor", "--json")
    assert run.code == 78 and json.loads(run.stdout)["checks"][1]["data"]["suggested_cloud"] == tenant_cloud


def test_cross_cloud_from_the_token_endpoint_alone_is_still_explained() -> None:
    # When discovery could not be compared (a custom login host that reports no cloud), AADSTS900382 at the
    # token step leads to the same explanation, with what is known.
    from m365relay.clouds import resolve_cloud

    connector = ConnectorConfig(  # a record as the store hands it out; only the fields the check reads matter
        id=1, name="default", client_id=CLIENT, tenant_id=TENANT, user_name="noreply@fabrikam.us",
        cloud=resolve_cloud("global"), state="active", state_reason=None, state_error_kind=None,
        state_error_code=None, state_remedy=None, state_changed_at=None, next_probe_at=None, probe_attempts=0,
        consent_granted_at=None, config_version=1, credential=None, next_credential=None, old_credential=None,
        created_at=None, updated_at=None,  # type: ignore[arg-type]
    )  # fmt: skip
    unknown = cross_cloud_result(connector, None, None)
    assert unknown.status == "fail" and "another national cloud" in unknown.detail
    assert "global, usgov-high, usgov-dod, china" in unknown.remedy
    china = Discovery(TENANT, "partner.microsoftonline.cn", "AS", None)
    explained = cross_cloud_result(connector, china, "microsoftonline.com")
    assert "China (operated by 21Vianet) cloud (china)" in explained.detail and "--cloud china" in explained.remedy
