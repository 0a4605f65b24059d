"""Assemble the one ASGI app that serves login, Graph, the admin API and the viewer on one port."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from . import admin, consent, drafts, graph, identity, inbox_graph, portal, sentitems, users, viewer
from .state import Sandbox

# Graph path segments are case-insensitive (`/Users/x/SendMail` works) [obs]; routes use one spelling.
_GRAPH_SEGMENTS = {
    name.lower(): name
    for name in (
        "users",
        "me",
        "sendMail",
        "messages",
        "attachments",
        "createUploadSession",
        "send",
        "mailFolders",
        "delta",
        "sentitems",  # a well-known folder name, case-insensitive [doc]
    )
}


class GraphPathCase:
    """Rewrite the known Graph segments of `/v1.0/...` paths to the spelling the routes use."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path[:6].lower() == "/v1.0/":
            parts = path.split("/")
            canonical = "/".join([*parts[:2], *(_GRAPH_SEGMENTS.get(p.lower(), p) for p in parts[2:])])
            if canonical != path:
                scope = {**scope, "path": canonical, "raw_path": canonical.encode()}
        await self.app(scope, receive, send)


def build_app(sandbox: Sandbox) -> ASGIApp:
    templates = viewer.make_templates()
    # Order matters: specific Graph routes before Graph's catch-all, fixed prefixes before `/{tenant}/...`.
    send_mail, *graph_rest = graph.routes(sandbox)
    route_list: list[BaseRoute] = [
        send_mail,  # first: it is the hot path, and routes are tried in order
        *drafts.routes(sandbox),
        *inbox_graph.routes(sandbox),
        *sentitems.routes(sandbox),
        *users.routes(sandbox),
        *graph_rest,
        *sentitems.admin_routes(sandbox),
        *admin.routes(sandbox),
        *viewer.routes(sandbox, templates),
        *portal.routes(sandbox, templates),
        *consent.routes(sandbox, templates),
        *identity.routes(sandbox),
    ]
    return GraphPathCase(Starlette(routes=route_list))
