"""Entra ID (AADSTS) errors as the v2.0 endpoints return them (PROTOCOL.md §1).

Body: `error`, `error_description` ("AADSTSnnn: text\\r\\nTrace ID: …\\r\\nCorrelation ID: …\\r\\nTimestamp: …"),
`error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`. Status codes follow the table in
PROTOCOL.md; rows marked [?] there use the documented neighbour.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from starlette.responses import Response

NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


class AadstsError(Exception):
    """An error the identity endpoints answer with; `code` is the AADSTS number."""

    def __init__(self, code: int, error: str, status: int, text: str) -> None:
        super().__init__(f"AADSTS{code}: {text}")
        self.code = code
        self.error = error
        self.status = status
        self.text = text

    def response(self, now: float, correlation_id: str | None) -> Response:
        trace_id = str(uuid.uuid4())
        correlation = correlation_id or str(uuid.uuid4())
        stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": self.error,
            "error_description": (
                f"AADSTS{self.code}: {self.text}\r\nTrace ID: {trace_id}\r\n"
                f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        headers = dict(NO_STORE)
        headers["x-ms-request-id"] = trace_id
        if correlation_id:
            headers["client-request-id"] = correlation_id
        return Response(
            json.dumps(body),
            status_code=self.status,
            media_type="application/json; charset=utf-8",
            headers=headers,
        )


def missing_parameter(name: str) -> AadstsError:
    return AadstsError(
        900144, "invalid_request", 400, f"The request body must contain the following parameter: '{name}'."
    )


def tenant_not_found(tenant: str, *, discovery: bool) -> AadstsError:
    # Discovery says invalid_tenant, the token endpoint invalid_request [obs].
    return AadstsError(
        90002,
        "invalid_tenant" if discovery else "invalid_request",
        400,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
        "into the correct cloud. Check with your subscription administrator, this may happen if there are "
        "no active subscriptions for the tenant.",
    )


def malformed_tenant(tenant: str, *, discovery: bool) -> AadstsError:
    return AadstsError(
        900023,
        "invalid_tenant" if discovery else "invalid_request",
        400,
        f"Specified tenant identifier '{tenant}' is neither a valid DNS name, nor a valid external domain.",
    )


def no_tenant_for_client_credentials() -> AadstsError:
    # /common and /organizations cannot identify the tenant of an app-only request.
    return AadstsError(
        50059,
        "invalid_request",
        400,
        "No tenant-identifying information found in either the request or implied by any provided credentials.",
    )


def cross_cloud() -> AadstsError:
    return AadstsError(900382, "invalid_request", 400, "Confidential Client is not supported in Cross Cloud request.")


def app_not_found(client_id: str, tenant: str) -> AadstsError:
    return AadstsError(
        700016,
        "unauthorized_client",
        400,
        f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
        "happen if the application has not been installed by the administrator of the tenant or consented "
        "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
    )


def invalid_client_id(client_id: str) -> AadstsError:
    return AadstsError(700038, "unauthorized_client", 400, f"{client_id} is not a valid application identifier.")


def app_disabled(client_id: str, name: str) -> AadstsError:
    return AadstsError(7000112, "unauthorized_client", 400, f"Application '{client_id}'({name}) is disabled.")


def unsupported_grant_type(grant_type: str) -> AadstsError:
    return AadstsError(
        70003, "unsupported_grant_type", 400, f"The app requested an unsupported grant type '{grant_type}'."
    )


def scope_without_default(scope: str) -> AadstsError:
    return AadstsError(
        1002012,
        "invalid_scope",
        400,
        f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
        "with /.default suffixed to the resource identifier (application ID URI).",
    )


def invalid_scope(scope: str) -> AadstsError:
    return AadstsError(
        70011,
        "invalid_scope",
        400,
        f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
    )


def resource_not_found(resource: str, tenant: str) -> AadstsError:
    """A scope naming a resource the tenant has no service principal for, e.g. a proxy's URL in front of
    Graph (PROTOCOL.md §14): Entra answers ``invalid_resource`` AADSTS500011."""
    return AadstsError(
        500011,
        "invalid_resource",
        400,
        f"The resource principal named {resource} was not found in the tenant named {tenant}. This can happen "
        "if the application has not been installed by the administrator of the tenant or consented to by any "
        "user in the tenant. You might have sent your authentication request to the wrong tenant.",
    )


def several_resources(scope: str) -> AadstsError:
    return AadstsError(
        28000,
        "invalid_scope",
        400,
        f"Provided value for the input parameter scope is not valid because it contains more than one "
        f"resource. Scope {scope} is not valid.",
    )


def no_credential() -> AadstsError:
    return AadstsError(
        7000218,
        "invalid_client",
        401,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )


def bad_secret(client_id: str) -> AadstsError:
    # The text itself warns about the Secret ID/Value mix-up (PROTOCOL.md §1, [obs]).
    return AadstsError(
        7000215,
        "invalid_client",
        401,
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
        f"value, not the client secret ID, for a secret added to app '{client_id}'.",
    )


def expired_secret(client_id: str) -> AadstsError:
    return AadstsError(
        7000222,
        "invalid_client",
        401,
        f"The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create "
        "new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials "
        "for added security: https://aka.ms/certCreds.",
    )


def malformed_assertion() -> AadstsError:
    return AadstsError(50027, "invalid_request", 400, "JWT token is invalid or malformed.")


def bad_assertion_type(value: str) -> AadstsError:
    return AadstsError(
        7000216,
        "invalid_client",
        401,
        f"'client_assertion_type' must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', got '{value}'.",
    )


def assertion_key_problem(client_id: str, reason: str, thumbprint: str) -> AadstsError:
    return AadstsError(
        700027,
        "invalid_client",
        401,
        f"Client assertion failed signature validation. [Reason - {reason}, Thumbprint of key used by "
        f"client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to "
        f"see configured keys for app Id '{client_id}'.]",
    )


def assertion_out_of_window(now: float, nbf: float | None, exp: float | None) -> AadstsError:
    def fmt(value: float | None) -> str:
        if value is None:
            return "(none)"
        return datetime.fromtimestamp(value, tz=UTC).strftime("%m/%d/%Y %H:%M:%S")

    return AadstsError(
        700024,
        "invalid_client",
        400,
        f"Client assertion is not within its valid time range. Current time: {fmt(now)}, assertion valid "
        f"from {fmt(nbf)}, expiry time of assertion {fmt(exp)}. Review the documentation at "
        "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
    )


def assertion_wrong_audience(audience: str) -> AadstsError:
    return AadstsError(
        50013,
        "invalid_client",
        401,
        f"Assertion failed signature validation. [Reason - The audience '{audience}' of the client assertion "
        "does not match the token endpoint of this tenant.]",
    )


def assertion_wrong_issuer() -> AadstsError:
    return AadstsError(
        700021,
        "invalid_client",
        401,
        "Client assertion application identifier doesn't match 'client_id' parameter. Review the "
        "documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
    )


def transient(status: int) -> AadstsError:
    """Used by fault injection: what a client sees when the token service has a bad moment."""
    return AadstsError(
        90033,
        "temporarily_unavailable",
        status,
        "A transient error has occurred. Please try again.",
    )
