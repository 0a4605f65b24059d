"""The boundary between MSAL / the token endpoint and our exception tree (PROTOCOL.md §1)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from ..connectors.model import ConnectorConfig
from ..errors import (
    AppDisabledError,
    AppNotFoundError,
    AssertionTimeError,
    CertificateNotRegisteredError,
    ConnectorError,
    CrossCloudError,
    DeliveryError,
    Diagnostics,
    InvalidScopeError,
    InvalidSecretError,
    MissingCredentialError,
    SecretExpiredError,
    TenantNotFoundError,
    ThrottledError,
    TokenRequestError,
    TokenServiceError,
)
from ..net import parse_retry_after

# AADSTS code → (error class, one-line message in the admin's words)
AADSTS: dict[int, tuple[type[ConnectorError], str]] = {
    90002: (TenantNotFoundError, "the tenant {tenant} was not found in this cloud (AADSTS90002)"),
    900023: (TenantNotFoundError, "the Tenant ID {tenant} is not a valid tenant identifier (AADSTS900023)"),
    900382: (CrossCloudError, "the tenant {tenant} belongs to a different Microsoft cloud (AADSTS900382)"),
    700016: (AppNotFoundError, "no application {client_id} in tenant {tenant} (AADSTS700016)"),
    7000112: (AppDisabledError, "the application {client_id} is disabled (AADSTS7000112)"),
    7000215: (InvalidSecretError, "the client secret is not valid (AADSTS7000215)"),
    7000222: (SecretExpiredError, "the client secret has expired (AADSTS7000222)"),
    7000218: (MissingCredentialError, "no client secret or assertion was sent (AADSTS7000218)"),
    700027: (CertificateNotRegisteredError, "the certificate is not registered on the app (AADSTS700027)"),
    700024: (AssertionTimeError, "the client assertion is outside its valid time range (AADSTS700024)"),
    70011: (InvalidScopeError, "the scope was refused (AADSTS70011)"),
    1002012: (InvalidScopeError, "the scope was refused (AADSTS1002012)"),
    500011: (InvalidScopeError, "the resource is not known in this tenant (AADSTS500011)"),
}
_AADSTS_IN_TEXT = re.compile(r"AADSTS(\d+)")


def translate_token_error(result: dict[str, Any], connector: ConnectorConfig) -> DeliveryError:
    """An MSAL failure dict (``error``, ``error_codes``, ``error_description``…) as one of our errors."""
    codes = result.get("error_codes") or []
    description = str(result.get("error_description") or "")
    if not codes and (found := _AADSTS_IN_TEXT.search(description)):
        codes = [int(found.group(1))]
    code = int(codes[0]) if codes else None
    diagnostics = Diagnostics(
        status=None,
        code=f"AADSTS{code}" if code else str(result.get("error") or "token_error"),
        request_id=result.get("trace_id"),
        correlation_id=result.get("correlation_id"),
        detail=description.splitlines()[0] if description else None,
    )
    cls, template = AADSTS.get(code or 0, (TokenRequestError, "the token request was refused ({error})"))
    message = template.format(tenant=connector.tenant_id, client_id=connector.client_id, error=diagnostics.code)
    error = cls(message, diagnostics=diagnostics)
    if cls is CrossCloudError:
        error.remedy = f"{error.remedy} {cross_cloud_hint(connector)}".strip()
    return error


def translate_token_http_error(response: httpx.Response | None) -> DeliveryError:
    """The token endpoint answered 429/5xx or something MSAL could not parse: transient."""
    if response is None:
        return TokenServiceError("the token endpoint's answer could not be understood")
    diagnostics = Diagnostics(status=response.status_code, code=f"HTTP{response.status_code}")
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if response.status_code == 429:
        return ThrottledError(
            "the token endpoint is throttling (429)", diagnostics=diagnostics, retry_after=retry_after
        )
    return TokenServiceError(
        f"the token endpoint answered {response.status_code}", diagnostics=diagnostics, retry_after=retry_after
    )


def translate_discovery_failure(response: httpx.Response | None, connector: ConnectorConfig) -> DeliveryError:
    """MSAL's constructor failed OpenID discovery; the recorded response says why."""
    if response is None:
        return TokenServiceError("OpenID discovery failed")
    if response.status_code >= 500 or response.status_code == 429:
        return translate_token_http_error(response)
    try:
        body = json.loads(response.text)
    except ValueError:
        body = {}
    if not isinstance(body, dict) or not (body.get("error_codes") or body.get("error_description")):
        return TenantNotFoundError(
            f"OpenID discovery for tenant {connector.tenant_id} failed with HTTP {response.status_code}",
            diagnostics=Diagnostics(status=response.status_code, code=f"HTTP{response.status_code}"),
        )
    return translate_token_error(body, connector)


def cross_cloud_hint(connector: ConnectorConfig) -> str:
    return f"The connector is set to the {connector.cloud.title} cloud ({connector.cloud.login_url})."
