"""Every token (PROTOCOL.md §1) and Graph (§6) failure the sandbox produces maps to the right typed error:
the class, transient or permanent, whose fault it is, and a remedy in the admin's words."""

from __future__ import annotations

import asyncio
import base64
import ssl
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import msal
import pytest

from m365relay import errors as e
from m365relay.auth.translate import translate_token_error
from m365relay.connectors import ConnectorConfig, ConnectorUpdate
from m365relay.connectors.certificates import generate_self_signed
from m365relay.graph.responses import translate_graph_error
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update

DEMO_SECRET = "wrongQ~0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"


def message(runtime_mailbox: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = headers.pop("From", runtime_mailbox)
    msg["To"] = headers.pop("To", "someone@example.com")
    msg["Subject"] = "mapping test"
    for name, value in headers.items():
        msg[name] = value
    msg.set_content("body")
    return msg


def send(runtime: Runtime, connector: ConnectorConfig, msg: EmailMessage | bytes, **kw: Any) -> Any:
    async def go() -> Any:
        try:
            return await runtime.sender.send(connector, msg, **kw)
        finally:
            await runtime.sender.aclose()

    return asyncio.run(go())


def failure(
    runtime: Runtime, connector: ConnectorConfig, msg: EmailMessage | bytes | None = None, **kw: Any
) -> e.DeliveryError:
    with pytest.raises(e.DeliveryError) as caught:
        send(runtime, connector, msg if msg is not None else message(connector.user_name), **kw)
    return caught.value


def reconfigure(runtime: Runtime, sandbox: SandboxServer, **changes: Any) -> ConnectorConfig:
    return runtime.connectors.save("default", connector_update(sandbox, **changes))


def assert_connector_fault(error: e.DeliveryError, cls: type[e.ConnectorError], *remedy_words: str) -> None:
    assert type(error) is cls, f"{type(error).__name__}: {error}"
    assert error.pauses_connector and not error.transient
    for word in remedy_words:
        assert word in error.remedy, f"{word!r} not in remedy: {error.remedy}"


def assert_message_fault(error: e.DeliveryError, cls: type[e.MessageError], *remedy_words: str) -> None:
    assert type(error) is cls, f"{type(error).__name__}: {error}"
    assert not error.pauses_connector and not error.transient
    for word in remedy_words:
        assert word in error.remedy


# -- token endpoint (§1) ------------------------------------------------------------------------------


def test_wrong_secret(runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    connector = reconfigure(runtime, sandbox, secret=DEMO_SECRET)
    error = failure(runtime, connector)
    assert_connector_fault(error, e.InvalidSecretError, "Certificates & secrets", "Value (not the Secret ID)")
    assert error.code == "AADSTS7000215" and error.diagnostics.correlation_id


def test_expired_secret(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.expire_secret()
    error = failure(runtime, connector)
    assert_connector_fault(error, e.SecretExpiredError, "New client secret", "Public Key (secret)")
    assert error.code == "AADSTS7000222"


def test_unknown_app(runtime: Runtime, sandbox: SandboxServer) -> None:
    connector = reconfigure(runtime, sandbox, client_id=str(uuid.uuid4()))
    error = failure(runtime, connector)
    assert_connector_fault(error, e.AppNotFoundError, "Application (client) ID")
    assert error.code == "AADSTS700016"


def test_unknown_tenant(runtime: Runtime, sandbox: SandboxServer) -> None:
    connector = reconfigure(runtime, sandbox, tenant_id=str(uuid.uuid4()))
    error = failure(runtime, connector)
    assert_connector_fault(error, e.TenantNotFoundError, "Directory (tenant) ID", "cloud")
    assert error.code == "AADSTS90002"


def test_tenant_in_another_cloud(runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    tenant = str(uuid.uuid4())
    admin.add_tenant(tenant, ["fabrikam.onmicrosoft.us"], cloud="usgov-high")
    app = admin.client.post(
        "/_sandbox/apps", json={"tenant": tenant, "granted_roles": ["Mail.Send"], "secrets": [{"value": DEMO_SECRET}]}
    ).json()
    connector = reconfigure(runtime, sandbox, tenant_id=tenant, client_id=app["client_id"], secret=DEMO_SECRET)
    error = failure(runtime, connector)
    assert_connector_fault(error, e.CrossCloudError, "national cloud", "Custom endpoints")
    assert error.code == "AADSTS900382"


def test_disabled_app(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.patch_app(enabled=False)
    error = failure(runtime, connector)
    assert_connector_fault(error, e.AppDisabledError, "Enterprise applications")
    assert error.code == "AADSTS7000112"


def test_certificate_not_registered(runtime: Runtime, sandbox: SandboxServer) -> None:
    cert = generate_self_signed("m365relay test", 30)
    connector = runtime.connectors.save(
        "default", ConnectorUpdate(**{**connector_update(sandbox).__dict__, "secret": None, "certificate": cert})
    )
    error = failure(runtime, connector)
    assert_connector_fault(error, e.CertificateNotRegisteredError, "Upload certificate")
    assert error.code == "AADSTS700027"


def test_certificate_credential_works_once_registered(
    runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin
) -> None:
    cert = generate_self_signed("m365relay test", 30)
    admin.add_certificate(cert.certificate_pem)
    connector = runtime.connectors.save(
        "default", ConnectorUpdate(**{**connector_update(sandbox).__dict__, "secret": None, "certificate": cert})
    )
    assert send(runtime, connector, message(connector.user_name)).request_id
    token = runtime.tokens.acquire(connector)
    from m365relay.auth import token_claims

    assert (token_claims(token.value.reveal()) or {}).get("appidacr") == "2"


def test_assertion_outside_its_time_window(runtime: Runtime, sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    cert = generate_self_signed("m365relay test", 30)
    admin.add_certificate(cert.certificate_pem)
    connector = runtime.connectors.save(
        "default", ConnectorUpdate(**{**connector_update(sandbox).__dict__, "secret": None, "certificate": cert})
    )
    admin.clock(3 * 3600)  # the sandbox is three hours ahead: our assertion looks expired
    error = failure(runtime, connector)
    assert_connector_fault(error, e.AssertionTimeError, "clock", "NTP")


def test_unknown_resource_scope(runtime: Runtime, sandbox: SandboxServer) -> None:
    # A scope built from a resource the tenant does not know (a proxy URL as the Graph resource): AADSTS500011.
    connector = reconfigure(runtime, sandbox, graph_resource="https://graph.unknown.example")
    error = failure(runtime, connector)
    assert_connector_fault(error, e.InvalidScopeError, "cloud")
    assert error.code == "AADSTS500011"  # as Entra answers (PROTOCOL.md §14), no longer 70011


def token_failure_body(
    sandbox: SandboxServer, admin: SandboxAdmin, tenant: str, form: dict[str, str]
) -> dict[str, Any]:
    response = admin.client.post(f"/{tenant}/oauth2/v2.0/token", data=form)
    assert response.status_code in (400, 401)
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("case", "cls", "code"),
    [
        ("no_default", e.InvalidScopeError, 1002012),
        ("missing_parameter", e.TokenRequestError, 900144),
        ("malformed_tenant", e.TenantNotFoundError, 900023),
        ("no_credential", e.MissingCredentialError, 7000218),
    ],
)
def test_token_errors_our_client_never_causes_still_map(
    sandbox: SandboxServer,
    admin: SandboxAdmin,
    runtime: Runtime,
    connector: ConnectorConfig,
    case: str,
    cls: type[e.ConnectorError],
    code: int,
) -> None:
    demo = admin.demo
    form = {
        "client_id": demo["client_id"],
        "grant_type": "client_credentials",
        "client_secret": demo["secret_value"],
        "scope": "https://graph.microsoft.com/.default",
    }
    tenant = demo["tenant_id"]
    if case == "no_default":
        form["scope"] = f"{sandbox.url}/Mail.Send"
    elif case == "missing_parameter":
        del form["grant_type"]
    elif case == "malformed_tenant":
        tenant = "not_a_tenant!"
    else:
        del form["client_secret"]
    body = token_failure_body(sandbox, admin, tenant, form)
    assert body["error_codes"] == [code]
    error = translate_token_error(body, connector)
    assert type(error) is cls and error.pauses_connector and error.remedy


# -- Graph (§6) -----------------------------------------------------------------------------------------


def test_no_consent_is_caught_from_the_token(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.grant()
    error = failure(runtime, connector)
    assert_connector_fault(error, e.ConsentMissingError, "Mail.Send", "Grant admin consent")
    assert admin.stats()["sendMail"] == 0, "no mail request is made with a token that has no roles"


def test_consent_without_mail_send(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.grant("Mail.Read")
    error = failure(runtime, connector)
    assert_connector_fault(error, e.PermissionMissingError, "Application permissions", "Mail.Send")


GRAPH_RESOURCE = "https://graph.microsoft.com"


def graph_token(sandbox: SandboxServer, admin: SandboxAdmin, resource: str | None = None) -> str:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(sandbox.ca_file))) as http:
        app = msal.ConfidentialClientApplication(
            admin.demo["client_id"],
            client_credential=admin.demo["secret_value"],
            authority=f"{sandbox.url}/{admin.demo['tenant_id']}",
            instance_discovery=False,
            http_client=http,
        )
        result = app.acquire_token_for_client([f"{resource or GRAPH_RESOURCE}/.default"])
    token: str = result["access_token"]
    return token


def raw_send(admin: SandboxAdmin, token: str, body: bytes, content_type: str = "text/plain") -> httpx.Response:
    return admin.client.post(
        f"/v1.0/users/{admin.demo['mailbox']}/sendMail",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )


def mime_body(to: str = "a@example.com") -> bytes:
    return base64.b64encode(f"From: x@example.com\r\nTo: {to}\r\nSubject: s\r\n\r\nb\r\n".encode())


def test_graph_answers_for_missing_roles_map_the_same(sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    admin.grant()
    response = raw_send(admin, graph_token(sandbox, admin), mime_body())
    assert response.status_code == 401
    error = translate_graph_error(response)
    assert isinstance(error, e.ConsentMissingError) and error.request_id
    admin.grant("Mail.Read")
    response = raw_send(admin, graph_token(sandbox, admin), mime_body())
    assert response.status_code == 403 and isinstance(translate_graph_error(response), e.PermissionMissingError)


def test_wrong_audience(sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    response = raw_send(admin, graph_token(sandbox, admin, "https://outlook.office365.com"), mime_body())
    assert response.status_code == 401 and "WWW-Authenticate" in response.headers
    assert_connector_fault(translate_graph_error(response), e.TokenRejectedError, "cloud")


def test_application_access_policy(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.put_policy(["someone-else@contoso.onmicrosoft.com"])
    error = failure(runtime, connector)
    assert_connector_fault(error, e.AccessPolicyError, "application access policy")
    assert error.diagnostics.status == 403


def test_unknown_mailbox(runtime: Runtime, sandbox: SandboxServer) -> None:
    connector = reconfigure(runtime, sandbox, user_name="ghost@contoso.onmicrosoft.com")
    error = failure(runtime, connector)
    assert_connector_fault(error, e.MailboxNotFoundError, "User Name")
    assert error.code == "ErrorInvalidUser"


def test_unlicensed_mailbox(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.put_mailbox(connector.user_name, licensed=False)
    error = failure(runtime, connector)
    assert_connector_fault(error, e.MailboxNotEnabledError, "licence")
    assert error.code == "MailboxNotEnabledForRESTAPI"


def test_invalid_recipient(runtime: Runtime, connector: ConnectorConfig) -> None:
    raw = f"From: {connector.user_name}\r\nTo: broken@@example..com\r\nSubject: x\r\n\r\nb\r\n".encode()
    error = failure(runtime, connector, raw)
    assert_message_fault(error, e.InvalidRecipientsError, "recipient")


def test_custom_header_must_start_with_x(sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    body = {
        "message": {
            "subject": "s",
            "toRecipients": [{"emailAddress": {"address": "a@example.com"}}],
            "internetMessageHeaders": [{"name": "Custom-Header", "value": "v"}],
        }
    }
    import json

    response = raw_send(admin, graph_token(sandbox, admin), json.dumps(body).encode(), "application/json")
    assert response.status_code == 400
    assert_message_fault(translate_graph_error(response), e.InvalidHeaderError, "x-")


def test_message_over_the_mailbox_limit(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.put_mailbox(connector.user_name, max_message_size=2000)
    msg = message(connector.user_name)
    msg.set_content("x" * 5000)
    error = failure(runtime, connector, msg)
    assert_message_fault(error, e.MessageTooLargeError, "35 MB")
    assert error.code == "ErrorMessageSizeExceeded"


def test_request_over_four_megabytes(sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    response = raw_send(admin, graph_token(sandbox, admin), b"A" * (4 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert_message_fault(translate_graph_error(response), e.MessageTooLargeError)


def test_send_as_denied(runtime: Runtime, connector: ConnectorConfig) -> None:
    error = failure(runtime, connector, message(connector.user_name, From="ceo@contoso.onmicrosoft.com"))
    assert_message_fault(error, e.SendAsDeniedError, "Send As")


def test_bad_base64_mime(sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    response = raw_send(admin, graph_token(sandbox, admin), b"!!!not base64!!!")
    assert response.status_code == 400
    assert_message_fault(translate_graph_error(response), e.MalformedMessageError)


@pytest.mark.parametrize(
    ("rule", "cls", "retry_after"),
    [
        ({"status": 429, "code": "ApplicationThrottled", "retry_after": "2.128"}, e.ThrottledError, 2.128),
        ({"status": 429, "code": "TooManyRequests", "retry_after": "7"}, e.ThrottledError, 7.0),
        ({"status": 503, "retry_after": "3"}, e.ServiceUnavailableError, 3.0),
        ({"status": 504}, e.ServiceUnavailableError, None),
        # The sandbox resets after reading the request: written, no answer — in doubt, not a clean failure.
        ({"kind": "reset"}, e.SendInDoubtError, None),
    ],
)
def test_transient_graph_failures(
    runtime: Runtime,
    connector: ConnectorConfig,
    admin: SandboxAdmin,
    rule: dict[str, Any],
    cls: type[e.TransientError],
    retry_after: float | None,
) -> None:
    admin.faults({"sendMail": {**rule, "count": 1}})
    error = failure(runtime, connector)
    assert type(error) is cls and error.transient and not error.pauses_connector
    assert error.retry_after == retry_after


def test_token_endpoint_outage_is_transient(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.faults({"token": {"status": 503, "count": 1}})
    error = failure(runtime, connector)
    assert type(error) is e.TokenServiceError and error.transient


def test_expired_token_is_replaced_once(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    assert send(runtime, connector, message(connector.user_name)).request_id
    admin.clock(2 * 3600)  # our cached token is now expired in the sandbox's eyes
    assert send(runtime, connector, message(connector.user_name)).request_id
    assert admin.stats()["token_success"] == 2


def test_untrusted_server_certificate(runtime: Runtime, sandbox: SandboxServer, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(generate_self_signed("not the sandbox", 5).certificate_pem)
    connector = reconfigure(runtime, sandbox, ca_file=str(other_ca))
    error = failure(runtime, connector)
    assert_connector_fault(error, e.TlsTrustError, "CA file")


def test_a_redirect_is_not_a_send(runtime: Runtime, connector: ConnectorConfig) -> None:
    import httpx as _httpx

    from m365relay.graph import GraphSender

    def redirect(request: _httpx.Request) -> _httpx.Response:
        return _httpx.Response(307, headers={"location": "https://login.example/sso?x=1"})

    sender = GraphSender(runtime.tokens, transport=_httpx.MockTransport(redirect))

    async def go() -> None:
        try:
            await sender.send(connector, message(connector.user_name))
        finally:
            await sender.aclose()

    with pytest.raises(e.EndpointError) as caught:
        asyncio.run(go())
    assert_connector_fault(caught.value, e.EndpointError, "Graph URL")
    assert "https://login.example/sso" in str(caught.value) and "x=1" not in str(caught.value)


@pytest.mark.parametrize("rule", [{"status": 429, "retry_after": "3"}, {"status": 503}])
def test_a_throttled_or_failing_token_endpoint_is_transient_not_a_setup_error(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin, rule: dict[str, Any]
) -> None:
    admin.faults({"token": {**rule, "count": 1}})
    error = failure(runtime, connector)
    assert error.transient and not error.pauses_connector, f"{type(error).__name__}: {error}"
