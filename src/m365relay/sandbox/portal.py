"""A small "App registrations" blade, so the setup manual's Azure portal steps can be rehearsed in a browser
against the sandbox: Overview (Application (client) ID, Directory (tenant) ID), Authentication (Web redirect
URIs), Certificates & secrets (New client secret: Description, Expires up to 24 months; the Value and the
Secret ID shown once, then only the Value's first three characters, as the portal does), API permissions
(Microsoft Graph application permissions, and "Grant admin consent for …").

Like the rest of the sandbox it listens on 127.0.0.1 only and has no sign-in; it changes the same directory
the `/_sandbox/apps/...` API changes. Redirect URIs follow Entra's rules for the Web platform: absolute
``https://`` URLs, or ``http://`` for localhost only, without a fragment.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .directory import App, Secret
from .seed import new_secret_value
from .state import Sandbox

BASE = "/portal/apps"
EXPIRY_CHOICES = (("3", "90 days (3 months)"), ("6", "180 days (6 months)"), ("12", "365 days (12 months)"),
                  ("18", "545 days (18 months)"), ("24", "730 days (24 months)"))  # fmt: skip
# Application permissions of Microsoft Graph the relay may ask for (PROTOCOL.md §5, §12).
GRAPH_PERMISSIONS = ("Mail.Send", "Mail.ReadWrite", "Mail.ReadBasic.All", "Mail.Read")
LOCALHOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


def redirect_uri_problem(uri: str) -> str | None:
    """Why the portal would refuse this Web redirect URI, or None."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "The redirect URI must be an absolute URL starting with https:// (or http://localhost)."
    if parts.scheme == "http" and parts.hostname not in LOCALHOSTS:
        return "The redirect URI must start with https:// — http:// is allowed only for localhost."
    if parts.fragment or "#" in uri:
        return "The redirect URI must not contain a fragment (#)."
    if len(uri) > 256:
        return "The redirect URI must not be longer than 256 characters."
    return None


async def _form(request: Request) -> dict[str, str]:
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {key: values[0] for key, values in parsed.items()}


def _months_later(start: datetime, months: int) -> datetime:
    return start + timedelta(days=round(months * 30.4167))


def routes(sandbox: Sandbox, templates: Environment) -> list[BaseRoute]:
    def app_of(request: Request) -> App | None:
        return sandbox.directory.apps.get(str(request.path_params["client_id"]).lower())

    def page(app: App, status: int = 200, **values: Any) -> Response:
        tenant = sandbox.directory.tenants.get(app.tenant)
        html = templates.get_template("portal_app.html").render(
            app=app,
            tenant=tenant,
            now=sandbox.clock.now_dt(),
            expiry_choices=EXPIRY_CHOICES,
            permissions=GRAPH_PERMISSIONS,
            base=f"{BASE}/{app.client_id}",
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def back(app: App, section: str) -> Response:
        return RedirectResponse(f"{BASE}/{quote(app.client_id)}#{section}", status_code=303)

    async def index(request: Request) -> Response:
        html = templates.get_template("portal_apps.html").render(
            apps=list(sandbox.directory.apps.values()), tenants=sandbox.directory.tenants
        )
        return HTMLResponse(html)

    async def show(request: Request) -> Response:
        app = app_of(request)
        if app is None:
            return HTMLResponse("<p>No such app registration.</p>", status_code=404)
        return page(app)

    async def redirect_uris(request: Request) -> Response:
        app = app_of(request)
        if app is None:
            return HTMLResponse("<p>No such app registration.</p>", status_code=404)
        form = await _form(request)
        uri = form.get("uri", "").strip()
        if form.get("action") == "remove":
            kept = tuple(u for u in app.redirect_uris if u != uri)
            sandbox.directory.update_app(app.client_id, redirect_uris=kept)
            return back(app, "authentication")
        problem = redirect_uri_problem(uri)
        if problem is None and uri in app.redirect_uris:
            problem = "This redirect URI is registered already."
        if problem is not None:
            return page(app, 400, uri_error=problem, typed_uri=uri)
        sandbox.directory.update_app(app.client_id, redirect_uris=(*app.redirect_uris, uri))
        return back(app, "authentication")

    async def add_secret(request: Request) -> Response:
        app = app_of(request)
        if app is None:
            return HTMLResponse("<p>No such app registration.</p>", status_code=404)
        form = await _form(request)
        months = form.get("expires", "")
        if months not in {value for value, _ in EXPIRY_CHOICES}:
            return page(app, 400, expiry_error="Choose when the secret expires (24 months at most).")
        secret = Secret(
            secret_id=str(uuid.uuid4()),
            value=new_secret_value(),
            expires_at=_months_later(sandbox.clock.now_dt(), int(months)),
            description=form.get("description", "").strip()[:100],
        )
        app = sandbox.directory.update_app(app.client_id, secrets=(*app.secrets, secret))
        # The portal shows the Value once, right after Add; this page is that moment.
        return page(app, 200, new_secret=secret)

    async def delete_secret(request: Request) -> Response:
        app = app_of(request)
        if app is None:
            return HTMLResponse("<p>No such app registration.</p>", status_code=404)
        wanted = str(request.path_params["secret_id"]).lower()
        sandbox.directory.update_app(app.client_id, secrets=tuple(s for s in app.secrets if s.secret_id != wanted))
        return back(app, "secrets")

    async def permissions(request: Request) -> Response:
        app = app_of(request)
        if app is None:
            return HTMLResponse("<p>No such app registration.</p>", status_code=404)
        form = await _form(request)
        name, action = form.get("permission", ""), form.get("action", "add")
        if action == "consent":
            sandbox.directory.update_app(app.client_id, granted_roles=app.requested_permissions)
        elif action == "revoke":
            sandbox.directory.update_app(app.client_id, granted_roles=())
        elif name in GRAPH_PERMISSIONS and action == "add" and name not in app.requested_permissions:
            sandbox.directory.update_app(app.client_id, requested_permissions=(*app.requested_permissions, name))
        elif action == "remove":
            sandbox.directory.update_app(
                app.client_id,
                requested_permissions=tuple(p for p in app.requested_permissions if p != name),
                granted_roles=tuple(p for p in app.granted_roles if p != name),
            )
        return back(app, "permissions")

    return [
        Route(BASE, index, methods=["GET"]),
        Route(BASE + "/{client_id}", show, methods=["GET"]),
        Route(BASE + "/{client_id}/redirect-uris", redirect_uris, methods=["POST"]),
        Route(BASE + "/{client_id}/secrets", add_secret, methods=["POST"]),
        Route(BASE + "/{client_id}/secrets/{secret_id}/delete", delete_secret, methods=["POST"]),
        Route(BASE + "/{client_id}/permissions", permissions, methods=["POST"]),
    ]
