"""The login side: OpenID discovery, JWKS and the v2.0 token endpoint (client credentials).

Checks run in the order a client can observe from Entra: the tenant in the path, the request
parameters, the tenant's cloud, the app, the scope, then the credential (PROTOCOL.md §1).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import aadsts
from .aadsts import NO_STORE, AadstsError
from .directory import CLOUDS, App, Tenant, is_guid
from .pipeline import abort_connection, run_fault
from .state import Sandbox
from .tokens import ASSERTION_TYPE, verify_assertion

_DNS_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
MULTI_TENANT = ("common", "organizations", "consumers")


def request_base(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def resolve_tenant(sandbox: Sandbox, ident: str, *, discovery: bool) -> Tenant:
    if not (is_guid(ident) or _DNS_RE.match(ident)):
        raise aadsts.malformed_tenant(ident, discovery=discovery)
    tenant = sandbox.directory.find_tenant(ident)
    if tenant is None:
        raise aadsts.tenant_not_found(ident, discovery=discovery)
    return tenant


def discovery_document(sandbox: Sandbox, base: str, alias: str, tid: str, cloud: str) -> dict[str, Any]:
    info = CLOUDS[cloud]
    doc: dict[str, Any] = {
        "token_endpoint": f"{base}/{alias}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/{alias}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{tid}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"https://{info.msgraph_host}/oidc/userinfo",
        "authorization_endpoint": f"{base}/{alias}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{alias}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/{alias}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub",
            "iss",
            "cloud_instance_name",
            "cloud_instance_host_name",
            "cloud_graph_host_name",
            "msgraph_host",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "nonce",
            "preferred_username",
            "name",
            "tid",
            "ver",
            "at_hash",
            "c_hash",
            "email",
        ],
        "kerberos_endpoint": f"{base}/{alias}/kerberos",
        "tenant_region_scope": info.tenant_region_scope,
        "cloud_instance_name": info.cloud_instance_name,
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": info.msgraph_host,
        "rbac_url": "https://pas.windows.net",
    }
    if info.tenant_region_sub_scope:
        doc["tenant_region_sub_scope"] = info.tenant_region_sub_scope
    if alias in MULTI_TENANT:
        doc["tenant_region_scope"] = None
    return doc


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status_code=status, media_type="application/json; charset=utf-8", headers=headers)


async def _identity_fault(sandbox: Sandbox, request: Request, stage: str) -> Response | None:
    rule = await run_fault(sandbox, request, stage)
    if rule is None:
        return None
    if rule.kind == "reset":
        return await abort_connection(sandbox, request)
    if rule.status == 429:
        sandbox.stats.throttled["injected"] += 1
    response = aadsts.transient(rule.status).response(sandbox.clock.now(), request.headers.get("client-request-id"))
    if rule.retry_after is not None:
        response.headers["Retry-After"] = rule.retry_after
    return response


def _form(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (unquote(user), unquote(password)) if sep else None


def _resource_of(sandbox: Sandbox, scope: str, tenant: str) -> str:
    """The `aud` for this scope: one resource, `/.default` only (AADSTS1002012/28000/70011), and a resource
    the tenant knows — the real Graph of its cloud, never the URL the sandbox happens to listen on
    (AADSTS500011, PROTOCOL.md §14)."""
    scopes = scope.split()
    if not scopes:
        raise aadsts.missing_parameter("scope")
    for item in scopes:
        if not item.lower().endswith("/.default"):
            raise aadsts.scope_without_default(scope)
    resources = {item[: -len("/.default")].rstrip("/").lower() for item in scopes}
    if len(resources) > 1:
        raise aadsts.several_resources(scope)
    resource = resources.pop()
    audience = sandbox.graph_resources().get(resource)
    if audience is None:
        if not (resource.startswith(("https://", "http://", "api://")) or is_guid(resource)):
            raise aadsts.invalid_scope(scope)
        raise aadsts.resource_not_found(resource, tenant)
    return audience


def _check_secret(app: App, candidate: str, now: float) -> None:
    for secret in app.secrets:
        if hmac.compare_digest(secret.value.encode(), candidate.encode()):
            if secret.expires_at.timestamp() < now:
                raise aadsts.expired_secret(app.client_id)
            return
    # Also the answer when the Secret ID was pasted instead of the Value [obs].
    raise aadsts.bad_secret(app.client_id)


def _assertion_audiences(sandbox: Sandbox, request: Request, tenant: Tenant) -> set[str]:
    bases = {sandbox.base_url, request_base(request), sandbox.base_url.replace("127.0.0.1", "localhost")}
    out: set[str] = set()
    for base in bases:
        for alias in (tenant.id, *tenant.domains):
            out.add(f"{base}/{alias}/oauth2/v2.0/token".lower())
            out.add(f"{base}/{alias}/oauth2/token".lower())
    return out


def _check_credential(
    sandbox: Sandbox,
    request: Request,
    tenant: Tenant,
    app: App,
    form: dict[str, str],
    basic: tuple[str, str] | None,
    now: float,
) -> bool:
    """Verify the secret or the certificate assertion; True when it was a certificate."""
    assertion = form.get("client_assertion", "")
    if assertion:
        assertion_type = form.get("client_assertion_type", "")
        if not assertion_type:
            raise aadsts.missing_parameter("client_assertion_type")
        if assertion_type != ASSERTION_TYPE:
            raise aadsts.bad_assertion_type(assertion_type)
        verify_assertion(assertion, app, audiences=_assertion_audiences(sandbox, request, tenant), now=now)
        return True
    secret = form.get("client_secret") or (basic[1] if basic else "")
    if not secret:
        raise aadsts.no_credential()
    _check_secret(app, secret, now)
    return False


async def _issue(sandbox: Sandbox, request: Request, tenant_ident: str) -> Response:
    if tenant_ident.lower() in MULTI_TENANT:
        raise aadsts.no_tenant_for_client_credentials()
    tenant = resolve_tenant(sandbox, tenant_ident, discovery=False)
    form = _form(await request.body())
    basic = _basic_credentials(request)
    client_id = form.get("client_id") or (basic[0] if basic else "")
    for name, value in (("grant_type", form.get("grant_type")), ("client_id", client_id), ("scope", form.get("scope"))):
        if not value:
            raise aadsts.missing_parameter(name)
    if form["grant_type"] != "client_credentials":
        raise aadsts.unsupported_grant_type(form["grant_type"])
    if tenant.cloud != sandbox.cloud:
        raise aadsts.cross_cloud()
    if not is_guid(client_id):
        raise aadsts.invalid_client_id(client_id)
    app = sandbox.directory.find_app(tenant.id, client_id)
    if app is None:
        raise aadsts.app_not_found(client_id, tenant_ident)
    if not app.enabled:
        raise aadsts.app_disabled(app.client_id, app.display_name)
    audience = _resource_of(sandbox, form["scope"], tenant_ident)
    now = sandbox.clock.now()
    certificate = _check_credential(sandbox, request, tenant, app, form, basic, now)
    issued = sandbox.tokens.issue(
        tenant=tenant,
        app=app,
        audience=audience,
        now=now,
        lifetime=sandbox.directory.token_lifetime,
        certificate=certificate,
    )
    sandbox.stats.token_success += 1
    body = {
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "ext_expires_in": issued.expires_in,
        "access_token": issued.access_token,
    }
    headers = dict(NO_STORE)
    if request.headers.get("client-request-id"):
        headers["client-request-id"] = request.headers["client-request-id"]
    return _json(body, headers=headers)


def routes(sandbox: Sandbox) -> list[BaseRoute]:
    async def discovery(request: Request) -> Response:
        sandbox.stats.count("discovery")
        faulted = await _identity_fault(sandbox, request, "discovery")
        if faulted is not None:
            return faulted
        alias = request.path_params["tenant"]
        try:
            if alias.lower() in MULTI_TENANT:
                doc = discovery_document(sandbox, request_base(request), alias.lower(), "{tenantid}", sandbox.cloud)
            else:
                tenant = resolve_tenant(sandbox, alias, discovery=True)
                # A tenant of another cloud still answers, with its own cloud's facts [obs].
                doc = discovery_document(sandbox, request_base(request), tenant.id, tenant.id, tenant.cloud)
        except AadstsError as error:
            return error.response(sandbox.clock.now(), request.headers.get("client-request-id"))
        return _json(doc)

    async def jwks(request: Request) -> Response:
        sandbox.stats.count("jwks")
        return _json(sandbox.tokens.jwks())

    async def token(request: Request) -> Response:
        sandbox.stats.count("token")
        faulted = await _identity_fault(sandbox, request, "token")
        if faulted is not None:
            return faulted
        try:
            return await _issue(sandbox, request, request.path_params["tenant"])
        except AadstsError as error:
            sandbox.stats.token_failed(error.code)
            return error.response(sandbox.clock.now(), request.headers.get("client-request-id"))

    return [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", discovery, methods=["GET"]),
        Route("/{tenant}/discovery/v2.0/keys", jwks, methods=["GET"]),
        Route("/{tenant}/discovery/keys", jwks, methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
    ]
