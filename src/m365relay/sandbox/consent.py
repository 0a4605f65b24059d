"""The v2.0 admin-consent endpoint: a small Accept/Cancel page that records the grant (PROTOCOL.md §4).

`redirect_uri` must exactly match one registered on the app; otherwise the page shows the error
and never redirects (an open redirector would let anyone bounce admins to their site).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from . import aadsts, roles
from .aadsts import AadstsError
from .directory import App, Tenant
from .identity import resolve_tenant
from .state import Sandbox

DECLINED = "AADSTS65004: User declined to consent to access the app."


@dataclass(frozen=True)
class ConsentRequest:
    tenant: Tenant
    app: App
    redirect_uri: str
    scope: str
    state: str | None


def _validate(sandbox: Sandbox, alias: str, params: dict[str, str]) -> ConsentRequest:
    client_id = params.get("client_id", "")
    if not client_id:
        raise aadsts.missing_parameter("client_id")
    if alias.lower() == "common":
        raise AadstsError(
            90130,
            "invalid_request",
            400,
            "The 'common' endpoint cannot be used for admin consent; use the tenant ID, a verified domain "
            "or 'organizations'.",
        )
    if alias.lower() == "organizations":
        app = sandbox.directory.apps.get(client_id.lower())
        if app is None:
            raise aadsts.app_not_found(client_id, alias)
        tenant = sandbox.directory.tenants[app.tenant]
    else:
        tenant = resolve_tenant(sandbox, alias, discovery=False)
        found = sandbox.directory.find_app(tenant.id, client_id)
        if found is None:
            raise aadsts.app_not_found(client_id, alias)
        app = found
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in app.redirect_uris:
        raise AadstsError(
            50011,
            "invalid_request",
            400,
            f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
            f"configured for the application '{app.client_id}'. Make sure the redirect URI sent in the request "
            "matches one added to your application in the Azure portal.",
        )
    return ConsentRequest(tenant, app, redirect_uri, params.get("scope", ""), params.get("state"))


def _scope_error(sandbox: Sandbox, consent: ConsentRequest) -> str | None:
    """The AADSTS text when the scope does not name the cloud's real Graph resource (PROTOCOL.md §4, §14).

    Once the redirect URI is known to be registered, errors go back to it (RFC 6749 §4.1.2.1), so the
    application can tell the admin; an unknown resource is AADSTS500011 as at the token endpoint."""
    scopes = consent.scope.split()
    if not scopes:
        return "AADSTS900144: The request body must contain the following parameter: 'scope'."
    known = sandbox.graph_resources()
    for item in scopes:
        resource = item.removesuffix("/.default").rstrip("/").lower()
        if resource not in known:
            return str(aadsts.resource_not_found(resource, consent.tenant.id))
    return None


def _redirect(consent: ConsentRequest, params: dict[str, str]) -> Response:
    if consent.state is not None:
        params["state"] = consent.state
    joiner = "&" if "?" in consent.redirect_uri else "?"
    return RedirectResponse(consent.redirect_uri + joiner + urlencode(params), status_code=302)


def routes(sandbox: Sandbox, templates: Environment) -> list[BaseRoute]:
    def error_page(error: AadstsError) -> Response:
        html = templates.get_template("consent_error.html").render(code=error.code, text=error.text)
        return HTMLResponse(html, status_code=error.status)

    async def admin_consent(request: Request) -> Response:
        sandbox.stats.count("adminconsent")
        if request.method == "POST":
            parsed = parse_qs((await request.body()).decode("utf-8", "replace"))
            params = {key: values[0] for key, values in parsed.items()}
        else:
            params = dict(request.query_params)
        try:
            consent = _validate(sandbox, request.path_params["tenant"], params)
        except AadstsError as error:
            return error_page(error)
        problem = _scope_error(sandbox, consent)
        if problem is not None:
            code = "invalid_request" if "900144" in problem else "invalid_resource"
            return _redirect(consent, {"error": code, "error_description": problem})
        if request.method == "GET":
            html = templates.get_template("consent.html").render(
                app=consent.app,
                tenant=consent.tenant,
                params=params,
                action=request.url.path,
                describe=roles.describe,
            )
            return HTMLResponse(html)
        if params.get("action") == "accept":
            sandbox.directory.update_app(consent.app.client_id, granted_roles=consent.app.requested_permissions)
            return _redirect(consent, {"admin_consent": "True", "tenant": consent.tenant.id, "scope": consent.scope})
        return _redirect(consent, {"admin_consent": "True", "error": "consent_required", "error_description": DECLINED})

    return [
        Route("/{tenant}/v2.0/adminconsent", admin_consent, methods=["GET", "POST"]),
        Route("/{tenant}/adminconsent", admin_consent, methods=["GET", "POST"]),
    ]
